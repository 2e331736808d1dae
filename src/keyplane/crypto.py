"""Secrets at rest: sealing API secrets, hashing passphrases, generating keys.

HMAC schemes need the secret back at verify time, so secrets are *sealed* (AES-256-GCM under the
master key, with the key's id as associated data so a sealed secret cannot be moved to another key)
rather than hashed. Passphrases are only ever verified, so they get a slow hash.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import secrets
import stat
import sys
import threading
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("keyplane.crypto")

_NONCE_BYTES = 12
_SEAL_VERSION = b"\x01"

# OWASP's argon2id minimum (19 MiB, 2 passes): ~25 ms here. It runs when a key is made and on a key's
# first request; the verifier then caches the success, so it is never paid per request.
_PASSPHRASE_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def _parse_key(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else base64.urlsafe_b64decode(text + "==")
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError("a master key must be 32 bytes, as 64 hex digits or base64")
    return raw


def fingerprint(raw: bytes) -> str:
    """A master key's public name: 64 bits of a domain-separated SHA-256, safe to print and to store."""
    return "mk:" + hashlib.sha256(b"keyplane master key fingerprint\x00" + raw).hexdigest()[:16]


class MasterKey:
    """The AES-256-GCM key that seals every API secret, with older keys that still unseal.

    During a rotation the key file holds the new key first and the old one after it, so a secret sealed
    under either opens while the store is being re-sealed (``SealingService.reseal_secrets``).
    """

    __slots__ = ("_keys", "fingerprints")

    def __init__(self, current: bytes, *older: bytes) -> None:
        if any(len(raw) != 32 for raw in (current, *older)):
            raise ValueError("a master key must be 32 bytes")
        self._keys = [AESGCM(raw) for raw in (current, *older)]
        self.fingerprints: tuple[str, ...] = tuple(fingerprint(raw) for raw in (current, *older))  # newest first

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        """Keys as 64 hex digits or base64, one per line or comma-separated; the first seals."""
        entries = [entry for entry in text.replace(",", "\n").split() if entry]
        if not entries:
            raise ValueError("no master key given")
        return cls(*(_parse_key(entry) for entry in entries))

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"MasterKey(<{len(self._keys)} keys>)"

    def sealed_under_newest(self, sealed: bytes, key_id: str) -> bool:
        """Whether the newest key alone opens ``sealed`` (a rotation re-seals the others)."""
        try:
            self._keys[0].decrypt(sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :], key_id.encode())
        except InvalidTag:
            return False
        return sealed[:1] == _SEAL_VERSION

    def seal(self, secret: bytes, key_id: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _SEAL_VERSION + nonce + self._keys[0].encrypt(nonce, secret, key_id.encode())

    def unseal(self, sealed: bytes, key_id: str) -> bytes:
        if sealed[:1] != _SEAL_VERSION:
            raise ValueError("unknown seal version")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        for aead in self._keys:
            try:
                return aead.decrypt(nonce, body, key_id.encode())
            except InvalidTag:
                continue
        raise InvalidTag("no master key opens this secret")


class MasterKeyError(ValueError):
    """A master-key setting or file keyplane refuses to start with; its message is one line for the operator."""


# A key file must be readable by its owner only: group or other bits (any of them) are refused at start.
_OWNER_ONLY = stat.S_IRWXG | stat.S_IRWXO


def read_key_file(key_file: Path) -> str:
    """The key file's text. Refused (``MasterKeyError``) if it is a symbolic link, not a regular file, or
    its mode lets group or others read or write it: the master key opens every API secret."""
    try:
        fd = os.open(key_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise MasterKeyError(
                f"the master key file {key_file} is a symbolic link; give keyplane the file itself"
            ) from None
        raise MasterKeyError(f"cannot read the master key file {key_file}: {error.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # checked before fdopen, which fails on a directory
        os.close(fd)
        raise MasterKeyError(f"the master key file {key_file} is not a regular file")
    with os.fdopen(fd, "r") as handle:
        if info.st_mode & _OWNER_ONLY:
            raise MasterKeyError(
                f"the master key file {key_file} has mode {stat.S_IMODE(info.st_mode):04o}: group or others "
                f"may read or write it; run: chmod 600 {key_file}"
            )
        try:
            return handle.read()
        except UnicodeDecodeError:
            raise MasterKeyError(f"the master key file {key_file} is not text: 64 hex digits or base64") from None


def _write_temporary(key_file: Path, text: str) -> Path:
    """``text`` in a new file beside ``key_file`` under a unique name (``O_EXCL | O_NOFOLLOW``, 0600), synced."""
    temporary = key_file.with_name(f".{key_file.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, stat.S_IRUSR | stat.S_IWUSR)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_file(key_file: Path, text: str) -> None:
    """Replaces the key file atomically: a synced temporary file renamed over it, then the directory synced."""
    temporary = _write_temporary(key_file, text)
    try:
        os.replace(temporary, key_file)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(key_file.parent)


def _create_key_file(key_file: Path, text: str) -> bool:
    """Puts ``text`` at ``key_file`` unless a file is already there; False when another process made one
    first (two nodes starting at once): a hard link never replaces an existing name, a rename would."""
    key_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = _write_temporary(key_file, text)
    try:
        os.link(temporary, key_file)
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    _sync_directory(key_file.parent)
    return True


def load_or_create_master_key(env_value: str | None, key_file: Path, *, create: bool = True) -> MasterKey:
    """The master key from the environment, else from ``key_file``, made there on first use (``create``).

    A new file is created readable by its owner only (0600) and the operator is told where it is.
    """
    if env_value:
        return _keys_from_text(env_value, "KEYPLANE_MASTER_KEY")
    if not os.path.lexists(key_file):
        if not create:
            raise MasterKeyError(
                f"the master key file {key_file} does not exist: restore it from your backup, or set "
                "KEYPLANE_MASTER_KEY / KEYPLANE_MASTER_KEY_FILE"
            )
        if _create_key_file(key_file, new_master_key_text() + "\n"):
            print(
                f"keyplane: created a new master key in {key_file} (mode 0600). Back it up: without it the "
                "stored API secrets cannot be unsealed. Set KEYPLANE_MASTER_KEY to use your own.",
                file=sys.stderr,
            )
    return _keys_from_text(read_key_file(key_file), f"the master key file {key_file}")


def _keys_from_text(text: str, source: str) -> MasterKey:
    try:
        return MasterKey.from_text(text)
    except ValueError as error:
        raise MasterKeyError(f"{source}: {error}") from None


class MasterKeyRing:
    """The master keys in force, from ``KEYPLANE_MASTER_KEY`` or the key file, read again when the file changes.

    ``current()`` costs one ``stat`` with a key file: a rotation (``keyplane master-key rotate``) replaces the
    file, and every running process then seals under the new key and opens secrets under both, without
    being told. A ring given by the environment (or in code) never changes while the process runs.
    """

    def __init__(
        self,
        env_value: str | None = None,
        key_file: Path | None = None,
        *,
        fixed: MasterKey | None = None,
        create: bool = True,
    ):
        self._env_value = env_value
        self._key_file = key_file
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int] | None = None
        if fixed is not None:
            self._keys = fixed
        elif env_value:
            self._keys = _keys_from_text(env_value, "KEYPLANE_MASTER_KEY")
        elif key_file is not None:
            self._keys = load_or_create_master_key(None, key_file, create=create)
            self._stamp = self._stamp_of(key_file)
        else:
            raise MasterKeyError("no master key given")

    @classmethod
    def of(cls, keys: MasterKey | MasterKeyRing) -> MasterKeyRing:
        return keys if isinstance(keys, MasterKeyRing) else cls(fixed=keys)

    @property
    def from_file(self) -> bool:
        return self._stamp is not None

    def current(self) -> MasterKey:
        if self._stamp is None or self._key_file is None:
            return self._keys
        stamp = self._stamp_of(self._key_file)
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        self._keys = MasterKey.from_text(read_key_file(self._key_file))
                    except ValueError as error:  # a half-edited or loosened file: keep the keys in force
                        log.error("master key file not reloaded: %s", error)
        return self._keys

    def replace(self, keys: MasterKey) -> None:
        """Seals under ``keys`` from now on (tests, and a ring that does not come from a file)."""
        with self._lock:
            self._keys = keys
            self._stamp = None

    @staticmethod
    def _stamp_of(key_file: Path) -> tuple[int, int, int, int]:
        try:
            info = os.lstat(key_file)
        except OSError:
            return (0, 0, 0, 0)
        return (info.st_ino, info.st_mtime_ns, info.st_size, info.st_mode)


def new_master_key_text() -> str:
    return secrets.token_hex(32)


def hash_passphrase(passphrase: str) -> str:
    return _PASSPHRASE_HASHER.hash(passphrase)


def verify_passphrase(stored_hash: str, passphrase: str) -> bool:
    try:
        return _PASSPHRASE_HASHER.verify(stored_hash, passphrase)
    except (VerificationError, InvalidHashError):
        return False


def new_bitget_api_key() -> str:
    return "bg_" + secrets.token_hex(16)


def new_bitget_secret() -> str:
    return secrets.token_hex(32)


def new_whitebit_api_key() -> str:
    return secrets.token_hex(16)


def new_whitebit_secret() -> str:
    return secrets.token_hex(16)


def new_passphrase() -> str:
    return secrets.token_hex(8)

"""Secrets at rest: sealing API secrets, hashing passphrases, generating keys.

HMAC schemes need the secret back at verify time, so secrets are *sealed* (AES-256-GCM under the
master key, with the key's id as associated data so a sealed secret cannot be moved to another key)
rather than hashed. Passphrases are only ever verified, so they get a slow hash.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
import sys
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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


class MasterKey:
    """The AES-256-GCM key that seals every API secret, with older keys that still unseal.

    During a rotation the key file holds the new key first and the old one after it, so a secret sealed
    under either opens while the store is being re-sealed (``KeyplaneService.reseal_secrets``).
    """

    __slots__ = ("_keys",)

    def __init__(self, current: bytes, *older: bytes) -> None:
        if any(len(raw) != 32 for raw in (current, *older)):
            raise ValueError("a master key must be 32 bytes")
        self._keys = [AESGCM(raw) for raw in (current, *older)]

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        """Keys as 64 hex digits or base64, one per line or comma-separated; the first seals."""
        entries = [entry for entry in text.replace(",", "\n").split() if entry]
        if not entries:
            raise ValueError("no master key given")
        return cls(*(_parse_key(entry) for entry in entries))

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


def load_or_create_master_key(env_value: str | None, key_file: Path) -> MasterKey:
    """The master key from the environment, else from ``key_file``, made there on first use.

    A new file is created readable by its owner only (0600) and the operator is told where it is.
    """
    if env_value:
        return MasterKey.from_text(env_value)
    if key_file.exists():
        return MasterKey.from_text(key_file.read_text())
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as handle:
        handle.write(new_master_key_text() + "\n")
    print(
        f"keyplane: created a new master key in {key_file} (mode 0600). Back it up: without it the "
        "stored API secrets cannot be unsealed. Set KEYPLANE_MASTER_KEY to use your own.",
        file=sys.stderr,
    )
    return MasterKey.from_text(key_file.read_text())


def new_master_key_text() -> str:
    return secrets.token_hex(32)


def write_key_file(key_file: Path, text: str) -> None:
    """Replaces the key file atomically, readable by its owner only."""
    temporary = key_file.with_name(key_file.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, key_file)


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

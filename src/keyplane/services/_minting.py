"""Making a key: checking what it is made of, its secret and passphrase, and its row. Shared by the key
use-cases and by the batch that makes sub-accounts and their keys in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyplane import crypto
from keyplane.domain.ipnet import normalize_ip_rule
from keyplane.domain.lifecycle import check_expiry
from keyplane.domain.model import Account, ApiKey, Scheme, SignType
from keyplane.domain.rules import check_passphrase
from keyplane.errors import ApiKeyLimit, InvalidInput, InvalidIp, IpLimit
from keyplane.services._context import ServiceContext
from keyplane.services.types import IssuedKey, NewKeySpec
from keyplane.store import Transaction


def normalize_ip_list(entries: Iterable[object], limit: int) -> tuple[str, ...]:
    out: list[str] = []
    for entry in entries:
        try:
            rule = normalize_ip_rule(entry)
        except InvalidIp as error:
            raise InvalidIp(error.message, field="ipList") from None
        if rule not in out:
            out.append(rule)
    if len(out) > limit:
        raise IpLimit(f"at most {limit} IPs per key", limit=limit, field="ipList")
    return tuple(out)


def hash_passphrase(passphrase: str | None) -> str | None:
    """Checks and hashes a passphrase; callers do this before their transaction (it takes ~25 ms)."""
    if passphrase is None:
        return None
    return crypto.hash_passphrase(check_passphrase(passphrase))


def check_rsa_public_key(scheme: Scheme, pem: str) -> None:
    """Refuses, before it is stored, a public key that no request could ever be verified against."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if scheme is not Scheme.BITGET:
        raise InvalidInput("only Bitget keys can be RSA keys", field="publicKey")
    # Bitget's own key generator makes 2048-bit keys; anything shorter is too weak to accept.
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise InvalidInput("the public key must be an RSA key of at least 2048 bits, in PEM", field="publicKey")


def new_secret(scheme: Scheme) -> str:
    return crypto.new_bitget_secret() if scheme is Scheme.BITGET else crypto.new_whitebit_secret()


def key_detail(key: ApiKey) -> dict[str, object]:
    """An audit line's account of a new key: what it may do, never its secret."""
    detail: dict[str, object] = {
        "accountUid": key.account_uid,
        "scheme": key.scheme.value,
        "label": key.label,
        "permissions": list(key.permissions),
        "ipList": list(key.ip_list),
        "keyType": key.key_type,
    }
    if key.expires_at is not None:
        detail["expiresAt"] = key.expires_at
    return detail


def insert_sub_key(
    ctx: ServiceContext,
    tx: Transaction,
    account: Account,
    scheme: Scheme,
    spec: NewKeySpec,
    passphrase_hash: str | None,
) -> IssuedKey:
    limits = ctx.policy.for_scheme(scheme)
    if tx.count_api_keys(account.uid) >= limits.keys_per_sub_account:
        raise ApiKeyLimit(f"at most {limits.keys_per_sub_account} keys", limit=limits.keys_per_sub_account)
    ips = normalize_ip_list(spec.ip_list, limits.ips_per_key)
    return insert_key(
        ctx, tx, account, scheme, label=spec.label, permissions=spec.permissions, ip_list=ips,
        passphrase=spec.passphrase, passphrase_hash=passphrase_hash, key_type=spec.key_type,
        expires_at=check_expiry(spec.expires_at),
    )


def insert_key(
    ctx: ServiceContext,
    tx: Transaction,
    account: Account,
    scheme: Scheme,
    *,
    label: str,
    permissions: tuple[str, ...],
    ip_list: tuple[str, ...],
    passphrase: str | None,
    passphrase_hash: str | None,
    key_type: int | None,
    public_key_pem: str | None = None,
    expires_at: int | None = None,
) -> IssuedKey:
    key_id = str(uuid.uuid4())
    api_key = crypto.new_bitget_api_key() if scheme is Scheme.BITGET else crypto.new_whitebit_api_key()
    secret = None if public_key_pem else new_secret(scheme)
    key = tx.insert_api_key(
        key_id=key_id,
        api_key=api_key,
        account_uid=account.uid,
        scheme=scheme,
        sign_type=SignType.RSA if public_key_pem else SignType.HMAC,
        sealed_secret=ctx.sealing_key(tx).seal(secret.encode(), key_id) if secret else None,
        public_key_pem=public_key_pem,
        passphrase_hash=passphrase_hash,
        label=label,
        permissions=permissions,
        key_type=key_type,
        ip_list=ip_list,
        expires_at=expires_at,
    )
    return IssuedKey(key=key, secret=secret, passphrase=passphrase)

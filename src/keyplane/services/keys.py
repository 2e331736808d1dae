"""API keys: the operator's keys of main accounts, and the keys a main account's signed key makes and
manages for its sub-accounts. Every read-modify-write of a key holds its row (``lock=True``)."""

from __future__ import annotations

from collections.abc import Sequence

from keyplane import crypto
from keyplane.domain.ipnet import normalize_ip_rule
from keyplane.domain.lifecycle import check_expiry
from keyplane.domain.model import Account, ApiKey, EndpointRule, Scheme
from keyplane.errors import (
    AccountNotFound,
    AlreadyInState,
    ApiKeyNotFound,
    InvalidInput,
    InvalidIp,
    IpAlreadyListed,
    IpLimit,
    IpNotListed,
    WrongPassphrase,
)
from keyplane.services._context import ServiceContext, changes_detail
from keyplane.services._minting import (
    check_rsa_public_key,
    hash_passphrase,
    insert_key,
    insert_sub_key,
    key_detail,
    new_secret,
    normalize_ip_list,
)
from keyplane.services.grants import check_grant, check_manages
from keyplane.services.types import Actor, IssuedKey, NewKeySpec, Operator
from keyplane.store import listing


class KeyService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    # the operator's view: any key, no caller ceiling ---------------------------------------------

    def issue_main_key(
        self,
        account_uid: int,
        scheme: Scheme,
        *,
        label: str = "",
        permissions: Sequence[str] = (),
        ip_list: Sequence[str] = (),
        passphrase: str | None = None,
        public_key_pem: str | None = None,
        key_type: int | None = None,
        by: Operator | None = None,
        expires_at: int | None = None,
    ) -> IssuedKey:
        """A main account's key, made by the operator. WhiteBIT keys are type 2 unless ``key_type`` says 1.
        ``expires_at`` (Unix ms, in the future): when it stops verifying (services/lifecycle.py)."""
        ctx = self._ctx
        check_expiry(expires_at)
        if key_type not in (None, 1, 2) or (key_type is not None and scheme is not Scheme.WHITEBIT):
            raise InvalidInput("a key type is 1 or 2, and only for WhiteBIT keys", field="type")
        if public_key_pem is not None:
            check_rsa_public_key(scheme, public_key_pem)
        if scheme is Scheme.BITGET and passphrase is None:
            passphrase = crypto.new_passphrase()
        passphrase_hash = hash_passphrase(passphrase)
        with ctx.store.transaction() as tx:
            account = tx.get_account(account_uid)
            if account is None or not account.is_main:
                raise AccountNotFound(f"no main account {account_uid}")
            limits = ctx.policy.for_scheme(scheme)
            ips = normalize_ip_list(ip_list, limits.ips_per_key)
            issued = insert_key(
                ctx, tx, account, scheme, label=label, permissions=tuple(permissions), ip_list=ips,
                passphrase=passphrase, passphrase_hash=passphrase_hash, public_key_pem=public_key_pem,
                key_type=(key_type or 2) if scheme is Scheme.WHITEBIT else None, expires_at=expires_at,
            )
            ctx.operator_audit(
                tx, by, "apikey.create", issued.key.api_key, account_uid=account.uid, detail=key_detail(issued.key)
            )
        return issued

    def find_key(self, api_key: str) -> ApiKey:
        with self._ctx.store.reading() as tx:
            key = tx.find_api_key(api_key)
        if key is None:
            raise ApiKeyNotFound("API key not found")
        return key

    def list_account_keys(self, account_uid: int) -> list[ApiKey]:
        """The keys of one account, main or sub; never a secret."""
        with self._ctx.store.reading() as tx:
            return tx.list_api_keys([account_uid])

    def set_key_enabled(self, api_key: str, enabled: bool, *, by: Operator | None = None) -> ApiKey:
        """The operator turns any key off or on again; running servers follow within 0.25 s."""
        with self._ctx.store.transaction() as tx:
            key = tx.find_api_key(api_key, lock=True)
            if key is None:
                raise ApiKeyNotFound("API key not found")
            if key.enabled is enabled:
                raise AlreadyInState(f"the key is already {'enabled' if enabled else 'disabled'}")
            updated = tx.update_api_key(key.id, enabled=enabled)
            account = tx.get_account(key.account_uid)
            self._ctx.operator_audit(
                tx, by, "apikey.enable" if enabled else "apikey.disable", key.api_key,
                account_uid=account.main_uid if account else None,
            )
        return updated

    def revoke_key(self, api_key: str, *, by: Operator | None = None) -> ApiKey:
        """The operator deletes any key; running servers stop accepting it (see auth/changes.py)."""
        with self._ctx.store.transaction() as tx:
            key = tx.find_api_key(api_key, lock=True)
            if key is None:
                raise ApiKeyNotFound("API key not found")
            account = tx.get_account(key.account_uid)
            tx.delete_api_key(key.id)
            self._ctx.operator_audit(
                tx, by, "apikey.revoke", key.api_key, account_uid=account.main_uid if account else None
            )
        return key

    def key_with_main(self, key_id: str) -> tuple[ApiKey, int] | None:
        """Any key by its id, with its main account's UID; never a secret."""
        with self._ctx.store.reading() as tx:
            return listing.key_with_main(tx, key_id)

    def page_keys(
        self,
        *,
        account_uid: int | None = None,
        main_uid: int | None = None,
        scheme: Scheme | None = None,
        enabled: bool | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 100,
    ) -> list[tuple[ApiKey, int]]:
        """Keys after ``after`` (created_at, id), newest first, each with its main account's UID."""
        with self._ctx.store.reading() as tx:
            return listing.keys(
                tx, account_uid=account_uid, main_uid=main_uid, scheme=scheme, enabled=enabled, after=after,
                limit=limit,
            )

    def modify_key(
        self,
        key_id: str,
        *,
        label: str | None = None,
        permissions: Sequence[str] | None = None,
        ip_list: Sequence[object] | None = None,
        by: Operator | None = None,
    ) -> ApiKey:
        """The operator changes any key's label, permissions or IP allowlist (no caller ceiling)."""
        ctx = self._ctx
        with ctx.store.transaction() as tx:
            key = tx.get_api_key(key_id, lock=True)
            if key is None:
                raise ApiKeyNotFound("API key not found")
            changes: dict[str, object] = {}
            if label is not None:
                changes["label"] = label
            if permissions is not None:
                changes["permissions"] = tuple(permissions)
            if ip_list is not None:
                changes["ip_list"] = normalize_ip_list(ip_list, ctx.policy.for_scheme(key.scheme).ips_per_key)
            updated = tx.update_api_key(key.id, **changes)
            account = tx.get_account(key.account_uid)
            ctx.operator_audit(
                tx, by, "apikey.modify", key.api_key, account_uid=account.main_uid if account else None,
                detail=changes_detail(changes),
            )
        return updated

    # a main account's signed key, on its sub-accounts' keys ------------------------------------

    def create_sub_key(
        self, actor: Actor, scheme: Scheme, spec: NewKeySpec, *, uid: int | None = None, public_id: str | None = None
    ) -> IssuedKey:
        ctx = self._ctx
        main = ctx.main_of(actor)
        ctx.check_grants_now(actor, scheme, [spec])  # before the slow hash
        passphrase_hash = hash_passphrase(spec.passphrase)
        with ctx.store.transaction() as tx:
            ctx.lock_main(tx, main)
            check_grant(ctx.caller_key(tx, actor), scheme, spec.permissions, spec.key_type)
            account = ctx.owned_sub(tx, actor, uid=uid, public_id=public_id)
            issued = insert_sub_key(ctx, tx, account, scheme, spec, passphrase_hash)
            ctx.audit(tx, actor, "apikey.create", issued.key.api_key, key_detail(issued.key))
        return issued

    def find_sub_key(
        self, actor: Actor, *, api_key: str | None = None, key_id: str | None = None, scheme: Scheme | None = None
    ) -> ApiKey:
        with self._ctx.store.reading() as tx:
            return self._ctx.owned_key(tx, actor, api_key=api_key, key_id=key_id, scheme=scheme)[0]

    def modify_sub_key(
        self,
        actor: Actor,
        *,
        api_key: str | None = None,
        key_id: str | None = None,
        sub_uid: int | None = None,
        passphrase: str | None = None,
        label: str | None = None,
        permissions: Sequence[str] | None = None,
        ip_list: Sequence[object] | None = None,
        endpoints: Sequence[EndpointRule] | None = None,
        scheme: Scheme | None = None,
    ) -> ApiKey:
        """Changes what is given; ``passphrase``, when given, must match the key's (it cannot change)."""
        ctx = self._ctx
        if passphrase is not None:
            # the slow hash runs before the write transaction, so it never holds the write lock
            with ctx.store.reading() as tx:
                key, _account = ctx.owned_key(tx, actor, api_key=api_key, key_id=key_id, scheme=scheme)
                stored = tx.passphrase_hash(key.id)
            if stored is None or not crypto.verify_passphrase(stored, passphrase):
                raise WrongPassphrase("passphrase is error", field="passphrase")
        with ctx.store.transaction() as tx:
            key, account = ctx.owned_key(tx, actor, api_key=api_key, key_id=key_id, scheme=scheme, lock=True)
            if sub_uid is not None and account.uid != sub_uid:
                raise ApiKeyNotFound("this key does not belong to that sub-account")
            caller = ctx.caller_key(tx, actor)
            check_manages(caller, key)
            if permissions is not None:
                check_grant(caller, key.scheme, permissions, key.key_type)
            changes: dict[str, object] = {}
            if label is not None:
                changes["label"] = label
            if permissions is not None:
                changes["permissions"] = tuple(permissions)
            if ip_list is not None:
                changes["ip_list"] = normalize_ip_list(ip_list, ctx.policy.for_scheme(key.scheme).ips_per_key)
            if endpoints is not None:
                changes["endpoints"] = tuple(endpoints)
            updated = tx.update_api_key(key.id, **changes)
            ctx.audit(tx, actor, "apikey.modify", key.api_key, changes_detail(changes))
        return updated

    def reset_sub_key(self, actor: Actor, *, key_id: str, scheme: Scheme | None = None) -> IssuedKey:
        """A new secret in place: the old one stops working with the very next request."""
        ctx = self._ctx
        with ctx.store.transaction() as tx:
            key, _account = ctx.owned_key(tx, actor, key_id=key_id, scheme=scheme, lock=True)
            check_manages(ctx.caller_key(tx, actor), key)  # a new secret mints the key anew
            secret = new_secret(key.scheme)
            # WhiteBIT's reset: the old secret dies at once, and so does one a rotation left in its grace period
            tx.update_api_key(
                key.id, sealed_secret=ctx.sealing_key(tx).seal(secret.encode(), key.id),
                previous_sealed_secret=None, previous_passphrase_hash=None, previous_until=None,
            )
            ctx.audit(tx, actor, "apikey.reset", key.api_key, {})
            updated = tx.get_api_key(key.id)
            assert updated is not None
        return IssuedKey(key=updated, secret=secret)

    def delete_sub_key(self, actor: Actor, *, key_id: str, scheme: Scheme | None = None) -> None:
        ctx = self._ctx
        with ctx.store.transaction() as tx:
            key, _account = ctx.owned_key(tx, actor, key_id=key_id, scheme=scheme, lock=True)
            tx.delete_api_key(key.id)
            ctx.audit(tx, actor, "apikey.delete", key.api_key, {})

    def add_key_ip(self, actor: Actor, *, key_id: str, ip: object, scheme: Scheme | None = None) -> ApiKey:
        ctx = self._ctx
        with ctx.store.transaction() as tx:
            key, _account = ctx.owned_key(tx, actor, key_id=key_id, scheme=scheme, lock=True)
            check_manages(ctx.caller_key(tx, actor), key)
            try:
                rule = normalize_ip_rule(ip)
            except InvalidIp:
                raise InvalidIp("Invalid IP address.", field="ip") from None
            if rule in key.ip_list:
                raise IpAlreadyListed("This IP address is already in allowlist", field="ip")
            limit = ctx.policy.for_scheme(key.scheme).ips_per_key
            if len(key.ip_list) >= limit:
                raise IpLimit(f"You have reached the maximum number of allowed IPs: {limit}", limit=limit)
            updated = tx.update_api_key(key.id, ip_list=(*key.ip_list, rule))
            ctx.audit(tx, actor, "apikey.ip.add", key.api_key, {"ip": rule})
        return updated

    def remove_key_ip(self, actor: Actor, *, key_id: str, ip: str, scheme: Scheme | None = None) -> ApiKey:
        ctx = self._ctx
        with ctx.store.transaction() as tx:
            key, _account = ctx.owned_key(tx, actor, key_id=key_id, scheme=scheme, lock=True)
            # removing an address widens where a key works: only a caller holding all it holds may
            check_manages(ctx.caller_key(tx, actor), key)
            try:
                rule = normalize_ip_rule(ip)
            except InvalidIp:
                rule = ip
            if rule not in key.ip_list:
                raise IpNotListed(f"IP address {ip} is not in the allowlist", field="ip")
            updated = tx.update_api_key(key.id, ip_list=tuple(r for r in key.ip_list if r != rule))
            ctx.audit(tx, actor, "apikey.ip.remove", key.api_key, {"ip": rule})
        return updated

    def list_sub_keys(
        self,
        actor: Actor,
        *,
        uid: int | None = None,
        public_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        scheme: Scheme | None = None,
    ) -> list[tuple[ApiKey, Account]]:
        """The keys of one sub-account, or of all the caller's sub-accounts (of one dialect with ``scheme``),
        newest first; never a secret."""
        ctx = self._ctx
        main = ctx.main_of(actor)
        with ctx.store.reading() as tx:
            if uid is None and public_id is None:
                subs = {a.uid: a for a in tx.list_sub_accounts(main.uid, limit=1_000_000)}
            else:
                sub = ctx.owned_sub(tx, actor, uid=uid, public_id=public_id)
                subs = {sub.uid: sub}
            keys = tx.list_api_keys(list(subs), limit=limit, offset=offset, scheme=scheme)
        return [(key, subs[key.account_uid]) for key in keys]

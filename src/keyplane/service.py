"""Use-cases of keyplane. Each runs in one store transaction and writes one audit event per mutation.

Nothing here knows HTTP or any wire dialect: dialects translate their requests into these calls and
the results back into their envelopes. Rules come from ``domain``; limits from the ``Policy``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy.exc
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyplane import crypto
from keyplane.domain.ipnet import normalize_ip_rule
from keyplane.domain.model import (
    Account,
    AccountStatus,
    ApiKey,
    AuditEvent,
    EndpointRule,
    Scheme,
    SignType,
)
from keyplane.domain.policy import Policy
from keyplane.domain.rules import check_passphrase
from keyplane.errors import (
    AccountNotFound,
    AlreadyInState,
    ApiKeyLimit,
    ApiKeyNotFound,
    BatchTooLarge,
    DuplicateInRequest,
    GrantExceeded,
    InvalidInput,
    InvalidIp,
    InvalidName,
    IpAlreadyListed,
    IpLimit,
    IpNotListed,
    NameTaken,
    NotMainAccount,
    SubAccountLimit,
    Unavailable,
    WrongPassphrase,
)
from keyplane.store import Store, Transaction


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks: the calling account, the key it signed with, and the IP it came from."""

    account: Account
    api_key: str | None = None
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just made or reset: the only time its secret (and a generated passphrase) is shown."""

    key: ApiKey
    secret: str | None = field(repr=False)  # shown to its owner once; never in a repr or traceback
    passphrase: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class NewKeySpec:
    """What a new sub-account key is made of, already in keyplane's terms."""

    label: str
    passphrase: str | None = field(default=None, repr=False)  # never in a repr or traceback
    permissions: tuple[str, ...] = ()
    ip_list: tuple[str, ...] = ()
    key_type: int | None = None


@dataclass(frozen=True, slots=True)
class NewSubAccountWithKey:
    name: str
    key: NewKeySpec  # its repr leaves out the passphrase
    label: str = ""
    permissions: tuple[str, ...] = ()


@dataclass(slots=True)
class SubAccountOutcome:
    """Per-name result of a create that documents partial failure (Bitget's failureList)."""

    created: list[Account] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


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


KeyListener = Callable[[Sequence[str]], None]


class KeyplaneService:
    """The use-cases, over one store, one master key and one policy."""

    def __init__(
        self, store: Store, master_key: crypto.MasterKey | crypto.MasterKeyRing, policy: Policy | None = None
    ) -> None:
        self.store = store
        # a ring read from the key file follows a rotation made by another process (crypto.MasterKeyRing)
        self.master_keys = crypto.MasterKeyRing.of(master_key)
        self.policy = policy or Policy()

    @property
    def master_key(self) -> crypto.MasterKey:
        """The keys in force now: the newest seals, the older ones still open."""
        return self.master_keys.current()

    def on_keys_changed(self, listener: KeyListener) -> None:
        """``listener`` hears of every key whose record or account changed, right after the commit."""
        self.store.on_keys_changed(listener)

    # main accounts (the operator, on the command line) -------------------------------------------

    def create_main_account(self, name: str, *, unique_name: bool = False) -> Account:
        """With ``unique_name`` (the ``keyplane`` command) the name must be new, whatever its case: checked
        under the write lock on SQLite; on PostgreSQL two simultaneous creations of one name can still both
        pass (no index enforces it yet, and stores made before may hold duplicates)."""
        name = name.strip()
        if not name or len(name) > 64:
            raise InvalidName("a main account's name is 1 to 64 characters", field="name")
        with self.store.transaction() as tx:
            if unique_name and tx.main_account_named(name) is not None:
                raise NameTaken(f"a main account is already named {name!r}", field="name")
            account = tx.insert_account(name=name, parent_uid=None, permissions=())
            tx.add_audit(
                action="account.create", target=str(account.uid), account_uid=account.uid,
                actor_uid=None, actor_key=None, ip=None, detail={"name": name},
            )
        return account

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
    ) -> IssuedKey:
        """A main account's key, made by the operator. WhiteBIT keys are type 2 unless ``key_type`` says 1."""
        if key_type not in (None, 1, 2) or (key_type is not None and scheme is not Scheme.WHITEBIT):
            raise InvalidInput("a key type is 1 or 2, and only for WhiteBIT keys", field="type")
        if public_key_pem is not None:
            _check_rsa_public_key(scheme, public_key_pem)
        if scheme is Scheme.BITGET and passphrase is None:
            passphrase = crypto.new_passphrase()
        passphrase_hash = _hash_passphrase(passphrase)
        with self.store.transaction() as tx:
            account = tx.get_account(account_uid)
            if account is None or not account.is_main:
                raise AccountNotFound(f"no main account {account_uid}")
            limits = self.policy.for_scheme(scheme)
            ips = normalize_ip_list(ip_list, limits.ips_per_key)
            issued = self._insert_key(
                tx, account, scheme, label=label, permissions=tuple(permissions), ip_list=ips,
                passphrase=passphrase, passphrase_hash=passphrase_hash, public_key_pem=public_key_pem,
                key_type=(key_type or 2) if scheme is Scheme.WHITEBIT else None,
            )
            tx.add_audit(
                action="apikey.create", target=issued.key.api_key, account_uid=account.uid, actor_uid=None,
                actor_key=None, ip=None, detail=_key_detail(issued.key),
            )
        return issued

    def list_main_accounts(
        self, *, name_contains: str | None = None, status: AccountStatus | None = None, limit: int = 100,
        offset: int = 0,
    ) -> list[Account]:
        with self.store.reading() as tx:
            return tx.list_main_accounts(
                name_contains=name_contains, status=status.value if status else None, limit=limit, offset=offset
            )

    def main_account(self, uid: int) -> Account:
        with self.store.reading() as tx:
            account = tx.get_account(uid)
        if account is None or not account.is_main:
            raise AccountNotFound(f"no main account {uid}")
        return account

    def set_main_account_status(self, uid: int, status: AccountStatus) -> Account:
        """Freeze or unfreeze a main account: a frozen one's own keys stop verifying (its sub-accounts keep their
        own status: the verifier reads the status of the key's account only)."""
        with self.store.transaction() as tx:
            account = tx.lock_account(uid)
            if account is None or not account.is_main:
                raise AccountNotFound(f"no main account {uid}")
            if account.status is status:
                raise AlreadyInState(f"main account {uid} is already {status.value}")
            updated = tx.update_account(uid, status=status)
            action = "account.freeze" if status is AccountStatus.FREEZE else "account.unfreeze"
            tx.add_audit(action=action, target=str(uid), account_uid=uid, actor_uid=None, actor_key=None, ip=None)
        return updated

    def delete_main_account(self, uid: int) -> Account:
        """Deletes an empty main account; one that still holds keys or sub-accounts is refused (revoke and
        delete them first), so that no key disappears with it unseen."""
        with self.store.transaction() as tx:
            account = tx.lock_account(uid)
            if account is None or not account.is_main:
                raise AccountNotFound(f"no main account {uid}")
            keys, subs = tx.count_api_keys(uid), tx.count_sub_accounts(uid)
            if keys or subs:
                raise AlreadyInState(
                    f"main account {uid} still holds {keys} key(s) and {subs} sub-account(s): revoke and delete "
                    "them first"
                )
            tx.delete_account(uid)
            tx.add_audit(
                action="account.delete", target=str(uid), account_uid=uid, actor_uid=None, actor_key=None, ip=None,
                detail={"name": account.name},
            )
        return account

    def find_key(self, api_key: str) -> ApiKey:
        with self.store.reading() as tx:
            key = tx.find_api_key(api_key)
        if key is None:
            raise ApiKeyNotFound("API key not found")
        return key

    def set_key_enabled(self, api_key: str, enabled: bool) -> ApiKey:
        """The operator turns any key off or on again; running servers follow within 0.25 s."""
        with self.store.transaction() as tx:
            key = tx.find_api_key(api_key, lock=True)
            if key is None:
                raise ApiKeyNotFound("API key not found")
            if key.enabled is enabled:
                raise AlreadyInState(f"the key is already {'enabled' if enabled else 'disabled'}")
            updated = tx.update_api_key(key.id, enabled=enabled)
            account = tx.get_account(key.account_uid)
            tx.add_audit(
                action="apikey.enable" if enabled else "apikey.disable", target=key.api_key,
                account_uid=account.main_uid if account else None, actor_uid=None, actor_key=None, ip=None,
            )
        return updated

    def list_account_keys(self, account_uid: int) -> list[ApiKey]:
        """The operator's view: the keys of one account, main or sub; never a secret."""
        with self.store.reading() as tx:
            return tx.list_api_keys([account_uid])

    def revoke_key(self, api_key: str) -> ApiKey:
        """The operator deletes any key; running servers stop accepting it (see auth/changes.py)."""
        with self.store.transaction() as tx:
            key = tx.find_api_key(api_key, lock=True)
            if key is None:
                raise ApiKeyNotFound("API key not found")
            account = tx.get_account(key.account_uid)
            tx.delete_api_key(key.id)
            tx.add_audit(
                action="apikey.revoke", target=key.api_key,
                account_uid=account.main_uid if account else None, actor_uid=None, actor_key=None, ip=None,
            )
        return key

    # sub-accounts --------------------------------------------------------------------------------

    def create_sub_accounts(
        self, actor: Actor, names: Sequence[str], scheme: Scheme, permissions: Sequence[str]
    ) -> SubAccountOutcome:
        """Makes each name that can be made; the others land in ``failed`` (Bitget's failureList)."""
        main = self._main_of(actor)
        limit = self.policy.for_scheme(scheme).sub_accounts_per_main
        outcome = SubAccountOutcome()
        with self.store.transaction() as tx:
            self._lock_main(tx, main)
            count = tx.count_sub_accounts(main.uid)
            seen: set[str] = set()
            for name in names:
                if count >= limit or name.lower() in seen or tx.alias_taken(name):
                    outcome.failed.append(name)
                    continue
                seen.add(name.lower())
                account = tx.insert_account_unless_taken(name=name, parent_uid=main.uid, permissions=tuple(permissions))
                if account is None:
                    outcome.failed.append(name)
                    continue
                outcome.created.append(account)
                count += 1
            for account in outcome.created:
                self._audit(tx, actor, "subaccount.create", str(account.uid), {"name": account.name})
        return outcome

    def create_sub_account(
        self,
        actor: Actor,
        scheme: Scheme,
        *,
        name: str,
        email: str | None = None,
        share_kyc: bool = False,
        permissions: Sequence[str] = (),
        label: str = "",
    ) -> Account:
        main = self._main_of(actor)
        limit = self.policy.for_scheme(scheme).sub_accounts_per_main
        with self._unique_names(), self.store.transaction() as tx:
            self._lock_main(tx, main)
            if tx.count_sub_accounts(main.uid) >= limit:
                raise SubAccountLimit(f"at most {limit} sub-accounts", limit=limit)
            if tx.alias_taken(name):
                raise NameTaken("alias already exists", field="alias")
            account = tx.insert_account(
                name=name, parent_uid=main.uid, label=label, email=email, share_kyc=share_kyc,
                permissions=tuple(permissions),
            )
            self._audit(tx, actor, "subaccount.create", str(account.uid), {"name": name})
        return account

    def batch_create_sub_accounts_with_keys(
        self, actor: Actor, entries: Sequence[NewSubAccountWithKey], scheme: Scheme
    ) -> list[IssuedKey]:
        """All or nothing: one entry that cannot be made and the whole batch is refused."""
        main = self._main_of(actor)
        limits = self.policy.for_scheme(scheme)
        if len(entries) > limits.batch_size:
            raise BatchTooLarge(f"at most {limits.batch_size} entries", limit=limits.batch_size)
        lowered = [entry.name.lower() for entry in entries]
        if len(set(lowered)) != len(lowered):
            raise DuplicateInRequest("the same name twice in one request", field="subAccountName")
        specs = [entry.key for entry in entries]
        self._check_grants_now(actor, scheme, specs)  # before the slow hashes
        hashes = [_hash_passphrase(entry.key.passphrase) for entry in entries]
        issued: list[IssuedKey] = []
        with self._unique_names(), self.store.transaction() as tx:
            self._lock_main(tx, main)
            caller = self._caller_key(tx, actor)
            for spec in specs:
                _check_grant(caller, scheme, spec.permissions, spec.key_type)
            count = tx.count_sub_accounts(main.uid)
            if count + len(entries) > limits.sub_accounts_per_main:
                limit = limits.sub_accounts_per_main
                raise SubAccountLimit(f"at most {limit} sub-accounts", limit=limit)
            if any(tx.alias_taken(entry.name) for entry in entries):
                raise NameTaken("sub-account name already exists", field="subAccountName")
            for entry, passphrase_hash in zip(entries, hashes, strict=True):
                account = tx.insert_account(
                    name=entry.name, parent_uid=main.uid, label=entry.label, permissions=entry.permissions
                )
                key = self._insert_sub_key(tx, account, scheme, entry.key, passphrase_hash)
                issued.append(key)
                self._audit(tx, actor, "subaccount.create", str(account.uid), {"name": entry.name})
                self._audit(tx, actor, "apikey.create", key.key.api_key, _key_detail(key.key))
        return issued

    def get_sub_account(self, actor: Actor, *, uid: int | None = None, public_id: str | None = None) -> Account:
        with self.store.reading() as tx:
            return self._owned_sub(tx, actor, uid=uid, public_id=public_id)

    def list_sub_accounts(
        self,
        actor: Actor,
        *,
        status: str | None = None,
        uid_less_than: int | None = None,
        search: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Account]:
        main = self._main_of(actor)
        with self.store.reading() as tx:
            return tx.list_sub_accounts(
                main.uid, status=status, uid_less_than=uid_less_than, search=search, limit=limit, offset=offset
            )

    def modify_sub_account(
        self,
        actor: Actor,
        *,
        uid: int | None = None,
        public_id: str | None = None,
        permissions: Sequence[str] | None = None,
        status: AccountStatus | None = None,
        name: str | None = None,
    ) -> Account:
        changes: dict[str, object] = {}
        with self._unique_names(), self.store.transaction() as tx:
            account = self._owned_sub(tx, actor, uid=uid, public_id=public_id, lock=True)
            if permissions is not None:
                caller = self._caller_key(tx, actor)
                # a Bitget sub-account's permissions are the ceiling of its keys: raising it is a grant too
                # (a WhiteBIT key has no permission list; its two flags stay within a type 1 key)
                if caller is not None and caller.scheme is Scheme.BITGET:
                    _check_grant(caller, Scheme.BITGET, permissions, None)
                changes["permissions"] = tuple(permissions)
            if status is not None:
                changes["status"] = status
            if name is not None and name != account.name:
                if tx.alias_taken(name, except_uid=account.uid):
                    raise NameTaken("alias already exists", field="alias")
                changes["name"] = name
            updated = tx.update_account(account.uid, **changes)
            self._audit(tx, actor, "subaccount.modify", str(account.uid), _changes_detail(changes))
        return updated

    def set_sub_account_status(
        self, actor: Actor, status: AccountStatus, *, uid: int | None = None, public_id: str | None = None
    ) -> Account:
        """Block/unblock: unlike modify, asking for the state it is already in is an error."""
        with self.store.transaction() as tx:
            account = self._owned_sub(tx, actor, uid=uid, public_id=public_id, lock=True)
            if account.status is status:
                raise AlreadyInState(f"sub-account already {status.value}")
            updated = tx.update_account(account.uid, status=status)
            action = "subaccount.freeze" if status is AccountStatus.FREEZE else "subaccount.unfreeze"
            self._audit(tx, actor, action, str(account.uid), {})
        return updated

    def delete_sub_account(self, actor: Actor, *, uid: int | None = None, public_id: str | None = None) -> None:
        with self.store.transaction() as tx:
            account = self._owned_sub(tx, actor, uid=uid, public_id=public_id, lock=True)
            tx.delete_account(account.uid)
            self._audit(tx, actor, "subaccount.delete", str(account.uid), {"name": account.name})

    # sub-account keys ----------------------------------------------------------------------------

    def create_sub_key(
        self, actor: Actor, scheme: Scheme, spec: NewKeySpec, *, uid: int | None = None, public_id: str | None = None
    ) -> IssuedKey:
        main = self._main_of(actor)
        self._check_grants_now(actor, scheme, [spec])  # before the slow hash
        passphrase_hash = _hash_passphrase(spec.passphrase)
        with self.store.transaction() as tx:
            self._lock_main(tx, main)
            _check_grant(self._caller_key(tx, actor), scheme, spec.permissions, spec.key_type)
            account = self._owned_sub(tx, actor, uid=uid, public_id=public_id)
            issued = self._insert_sub_key(tx, account, scheme, spec, passphrase_hash)
            self._audit(tx, actor, "apikey.create", issued.key.api_key, _key_detail(issued.key))
        return issued

    def find_sub_key(
        self, actor: Actor, *, api_key: str | None = None, key_id: str | None = None, scheme: Scheme | None = None
    ) -> ApiKey:
        with self.store.reading() as tx:
            return self._owned_key(tx, actor, api_key=api_key, key_id=key_id, scheme=scheme)[0]

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
        if passphrase is not None:
            # the slow hash runs before the write transaction, so it never holds the write lock
            with self.store.reading() as tx:
                key, _account = self._owned_key(tx, actor, api_key=api_key, key_id=key_id, scheme=scheme)
                stored = tx.passphrase_hash(key.id)
            if stored is None or not crypto.verify_passphrase(stored, passphrase):
                raise WrongPassphrase("passphrase is error", field="passphrase")
        with self.store.transaction() as tx:
            key, account = self._owned_key(tx, actor, api_key=api_key, key_id=key_id, scheme=scheme, lock=True)
            if sub_uid is not None and account.uid != sub_uid:
                raise ApiKeyNotFound("this key does not belong to that sub-account")
            caller = self._caller_key(tx, actor)
            _check_manages(caller, key)
            if permissions is not None:
                _check_grant(caller, key.scheme, permissions, key.key_type)
            changes: dict[str, object] = {}
            if label is not None:
                changes["label"] = label
            if permissions is not None:
                changes["permissions"] = tuple(permissions)
            if ip_list is not None:
                changes["ip_list"] = normalize_ip_list(ip_list, self.policy.for_scheme(key.scheme).ips_per_key)
            if endpoints is not None:
                changes["endpoints"] = tuple(endpoints)
            updated = tx.update_api_key(key.id, **changes)
            self._audit(tx, actor, "apikey.modify", key.api_key, _changes_detail(changes))
        return updated

    def reset_sub_key(self, actor: Actor, *, key_id: str, scheme: Scheme | None = None) -> IssuedKey:
        """A new secret in place: the old one stops working with the very next request."""
        with self.store.transaction() as tx:
            key, _account = self._owned_key(tx, actor, key_id=key_id, scheme=scheme, lock=True)
            _check_manages(self._caller_key(tx, actor), key)  # a new secret mints the key anew
            secret = _new_secret(key.scheme)
            tx.update_api_key(key.id, sealed_secret=self._sealing_key(tx).seal(secret.encode(), key.id))
            self._audit(tx, actor, "apikey.reset", key.api_key, {})
            updated = tx.get_api_key(key.id)
            assert updated is not None
        return IssuedKey(key=updated, secret=secret)

    def delete_sub_key(self, actor: Actor, *, key_id: str, scheme: Scheme | None = None) -> None:
        with self.store.transaction() as tx:
            key, _account = self._owned_key(tx, actor, key_id=key_id, scheme=scheme, lock=True)
            tx.delete_api_key(key.id)
            self._audit(tx, actor, "apikey.delete", key.api_key, {})

    def add_key_ip(self, actor: Actor, *, key_id: str, ip: object, scheme: Scheme | None = None) -> ApiKey:
        with self.store.transaction() as tx:
            key, _account = self._owned_key(tx, actor, key_id=key_id, scheme=scheme, lock=True)
            _check_manages(self._caller_key(tx, actor), key)
            try:
                rule = normalize_ip_rule(ip)
            except InvalidIp:
                raise InvalidIp("Invalid IP address.", field="ip") from None
            if rule in key.ip_list:
                raise IpAlreadyListed("This IP address is already in allowlist", field="ip")
            limit = self.policy.for_scheme(key.scheme).ips_per_key
            if len(key.ip_list) >= limit:
                raise IpLimit(f"You have reached the maximum number of allowed IPs: {limit}", limit=limit)
            updated = tx.update_api_key(key.id, ip_list=(*key.ip_list, rule))
            self._audit(tx, actor, "apikey.ip.add", key.api_key, {"ip": rule})
        return updated

    def remove_key_ip(self, actor: Actor, *, key_id: str, ip: str, scheme: Scheme | None = None) -> ApiKey:
        with self.store.transaction() as tx:
            key, _account = self._owned_key(tx, actor, key_id=key_id, scheme=scheme, lock=True)
            # removing an address widens where a key works: only a caller holding all it holds may
            _check_manages(self._caller_key(tx, actor), key)
            try:
                rule = normalize_ip_rule(ip)
            except InvalidIp:
                rule = ip
            if rule not in key.ip_list:
                raise IpNotListed(f"IP address {ip} is not in the allowlist", field="ip")
            updated = tx.update_api_key(key.id, ip_list=tuple(r for r in key.ip_list if r != rule))
            self._audit(tx, actor, "apikey.ip.remove", key.api_key, {"ip": rule})
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
        main = self._main_of(actor)
        with self.store.reading() as tx:
            if uid is None and public_id is None:
                subs = {a.uid: a for a in tx.list_sub_accounts(main.uid, limit=1_000_000)}
            else:
                sub = self._owned_sub(tx, actor, uid=uid, public_id=public_id)
                subs = {sub.uid: sub}
            keys = tx.list_api_keys(list(subs), limit=limit, offset=offset, scheme=scheme)
        return [(key, subs[key.account_uid]) for key in keys]

    def reseal_secrets(self, new_master_key: crypto.MasterKey | None = None, *, only_stale: bool = False) -> int:
        """Re-seals stored secrets under the newest key of ``new_master_key`` (default: the keys in force) in one
        transaction; returns how many. With ``only_stale``, only those the newest key alone cannot open.

        ``new_master_key`` must still open the old seals (a key ring with the old key after the new one). Each
        row is replaced only if it still holds what was read, so a secret reset meanwhile is never overwritten.
        """
        ring = new_master_key or self.master_key
        with self.store.transaction() as tx:
            sealed = tx.sealed_secrets()
            count = 0
            for key_id, secret in sealed:
                if only_stale and ring.sealed_under_newest(secret, key_id):
                    continue
                count += tx.reseal(key_id, secret, ring.seal(ring.unseal(secret, key_id), key_id))
            tx.add_audit(
                action="masterkey.rotate", target="*", account_uid=None, actor_uid=None, actor_key=None,
                ip=None, detail={"resealed": count},
            )
        if new_master_key is not None and not self.master_keys.from_file:
            self.master_keys.replace(new_master_key)
        return count

    def audit_events(self, *, account_uid: int | None = None, limit: int = 1000) -> list[AuditEvent]:
        with self.store.reading() as tx:
            return tx.list_audit(account_uid=account_uid, limit=limit)

    def account_of(self, uid: int) -> Account | None:
        with self.store.reading() as tx:
            return tx.get_account(uid)

    # internals -----------------------------------------------------------------------------------

    def _main_of(self, actor: Actor) -> Account:
        if not actor.account.is_main:
            raise NotMainAccount("the caller's key must belong to a main account")
        return actor.account

    def _caller_key(self, tx: Transaction, actor: Actor) -> ApiKey | None:
        """The key the caller signed with (what it may grant), or None for the operator: the command line
        acts with no key and no ceiling."""
        if actor.api_key is None:
            return None
        key = tx.find_api_key(actor.api_key)
        if key is None or key.account_uid != actor.account.uid:
            raise GrantExceeded("the caller's key no longer exists", field=READ_WRITE)
        return key

    def _check_grants_now(self, actor: Actor, scheme: Scheme, specs: Sequence[NewKeySpec]) -> None:
        """The grant check ahead of the slow passphrase hashes, so a key that may not mint keys costs
        no argon2id; the transaction checks again."""
        if actor.api_key is None:
            return
        with self.store.reading() as tx:
            caller = self._caller_key(tx, actor)
        for spec in specs:
            _check_grant(caller, scheme, spec.permissions, spec.key_type)

    def _lock_main(self, tx: Transaction, main: Account) -> None:
        if tx.lock_account(main.uid) is None:
            raise AccountNotFound("main account is gone")

    def _owned_sub(
        self,
        tx: Transaction,
        actor: Actor,
        *,
        uid: int | None = None,
        public_id: str | None = None,
        lock: bool = False,
    ) -> Account:
        main = self._main_of(actor)
        account: Account | None
        if uid is not None:
            account = tx.lock_account(uid) if lock else tx.get_account(uid)
        elif public_id is not None:
            account = tx.get_account_by_public_id(public_id)
        else:
            account = None
        if account is None or account.parent_uid != main.uid:
            raise AccountNotFound("this sub-account does not belong to the caller")
        return account

    def _owned_key(
        self,
        tx: Transaction,
        actor: Actor,
        *,
        api_key: str | None = None,
        key_id: str | None = None,
        scheme: Scheme | None = None,
        lock: bool = False,
    ) -> tuple[ApiKey, Account]:
        """A key of one of the caller's sub-accounts; with ``scheme``, only a key of that dialect. ``lock``
        holds the key's row until commit (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's write lock is
        already held): every read-modify-write of a key takes it, so two changes never lose one another."""
        main = self._main_of(actor)
        if api_key is not None:
            key = tx.find_api_key(api_key, lock=lock)
        else:
            key = tx.get_api_key(key_id, lock=lock) if key_id else None
        account = tx.get_account(key.account_uid) if key is not None else None
        if key is None or account is None or account.parent_uid != main.uid:
            raise ApiKeyNotFound("API key not found")
        if scheme is not None and key.scheme is not scheme:
            raise ApiKeyNotFound("API key not found")
        return key, account

    def _insert_sub_key(
        self, tx: Transaction, account: Account, scheme: Scheme, spec: NewKeySpec, passphrase_hash: str | None
    ) -> IssuedKey:
        limits = self.policy.for_scheme(scheme)
        if tx.count_api_keys(account.uid) >= limits.keys_per_sub_account:
            raise ApiKeyLimit(f"at most {limits.keys_per_sub_account} keys", limit=limits.keys_per_sub_account)
        ips = normalize_ip_list(spec.ip_list, limits.ips_per_key)
        return self._insert_key(
            tx, account, scheme, label=spec.label, permissions=spec.permissions, ip_list=ips,
            passphrase=spec.passphrase, passphrase_hash=passphrase_hash, key_type=spec.key_type,
        )

    def _sealing_key(self, tx: Transaction) -> crypto.MasterKey:
        """The keys to seal a new secret under, if they hold the one the store records (a key file swapped
        under a running server for another key must not seal secrets no other process can open)."""
        keys = self.master_key
        recorded = tx.recorded_master_key_fingerprint()
        if recorded is not None and recorded not in keys.fingerprints:
            raise Unavailable(
                f"the master key in force ({keys.fingerprints[0]}) is not the one the database records "
                f"({recorded}): no key is issued"
            )
        return keys

    def _insert_key(
        self,
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
    ) -> IssuedKey:
        key_id = str(uuid.uuid4())
        api_key = crypto.new_bitget_api_key() if scheme is Scheme.BITGET else crypto.new_whitebit_api_key()
        secret = None if public_key_pem else _new_secret(scheme)
        key = tx.insert_api_key(
            key_id=key_id,
            api_key=api_key,
            account_uid=account.uid,
            scheme=scheme,
            sign_type=SignType.RSA if public_key_pem else SignType.HMAC,
            sealed_secret=self._sealing_key(tx).seal(secret.encode(), key_id) if secret else None,
            public_key_pem=public_key_pem,
            passphrase_hash=passphrase_hash,
            label=label,
            permissions=permissions,
            key_type=key_type,
            ip_list=ip_list,
        )
        return IssuedKey(key=key, secret=secret, passphrase=passphrase)

    def _audit(self, tx: Transaction, actor: Actor, action: str, target: str, detail: dict[str, object]) -> None:
        tx.add_audit(
            action=action, target=target, account_uid=actor.account.main_uid, actor_uid=actor.account.uid,
            actor_key=actor.api_key, ip=actor.ip, detail=detail,
        )

    class _UniqueNames:
        """Turns a lost race on the venue-wide unique alias index into ``NameTaken``."""

        def __enter__(self) -> None:
            return None

        def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> Literal[False]:
            if isinstance(exc, sqlalchemy.exc.IntegrityError):
                raise NameTaken("alias already exists", field="alias") from None
            return False

    def _unique_names(self) -> KeyplaneService._UniqueNames:
        return KeyplaneService._UniqueNames()


# What ``GrantExceeded`` names when a read-only Bitget key tries to grant: the permission type of Bitget's
# older API (``permType``: ``read_and_write`` | ``readonly``), the one word for "any write permission".
READ_WRITE = "read_and_write"


def _bitget_held(caller: ApiKey) -> set[str]:
    """What a Bitget key may grant: its permissions, and ``read``, which any permission implies (as the
    verifier's ``bitget_grants`` reads them)."""
    return {*caller.permissions, "read"} if caller.permissions else set()


def _check_grant(caller: ApiKey | None, scheme: Scheme, permissions: Iterable[str], key_type: int | None) -> None:
    """A key made or changed by ``caller`` holds nothing ``caller`` lacks (issue 8, item 6).

    Bitget: every permission must be the caller's own, and a read-only caller (nothing but ``read``)
    grants nothing at all, not even ``read``. WhiteBIT: the new key's type (1 info and trading, 2 adds
    deposits and withdrawals) is at most the caller's. The operator (no caller key) grants anything.
    """
    if caller is None:
        return
    if scheme is Scheme.BITGET:
        held = _bitget_held(caller)
        if not held - {"read"}:
            raise GrantExceeded("a read-only key cannot grant keys", field=READ_WRITE)
        for permission in permissions:
            if permission not in held:
                raise GrantExceeded(f"the caller's key lacks {permission}", field=permission)
    elif (key_type or 1) > (caller.key_type or 1):
        raise GrantExceeded("the caller's key type is lower than the key's", field="type")


def _check_manages(caller: ApiKey | None, key: ApiKey) -> None:
    """``caller`` may change ``key`` (its label, addresses, secret) only if it holds all ``key`` holds:
    otherwise a weaker main key could, say, lift the IP allowlist of a withdrawal key."""
    _check_grant(caller, key.scheme, key.permissions, key.key_type)


def _hash_passphrase(passphrase: str | None) -> str | None:
    """Checks and hashes a passphrase; callers do this before their transaction (it takes ~25 ms)."""
    if passphrase is None:
        return None
    return crypto.hash_passphrase(check_passphrase(passphrase))


def _check_rsa_public_key(scheme: Scheme, pem: str) -> None:
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


def _new_secret(scheme: Scheme) -> str:
    return crypto.new_bitget_secret() if scheme is Scheme.BITGET else crypto.new_whitebit_secret()


def _key_detail(key: ApiKey) -> dict[str, object]:
    return {
        "accountUid": key.account_uid,
        "scheme": key.scheme.value,
        "label": key.label,
        "permissions": list(key.permissions),
        "ipList": list(key.ip_list),
        "keyType": key.key_type,
    }


def _changes_detail(changes: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in changes.items():
        if isinstance(value, tuple):
            out[name] = [e.url if isinstance(e, EndpointRule) else e for e in value]
        elif isinstance(value, AccountStatus):
            out[name] = value.value
        else:
            out[name] = value
    return out


__all__ = [
    "Actor",
    "IssuedKey",
    "KeyplaneService",
    "NewKeySpec",
    "NewSubAccountWithKey",
    "SubAccountOutcome",
]

"""Sub-accounts, made and managed by their main account's signed key (the exchange dialects)."""

from __future__ import annotations

from collections.abc import Sequence

from keyplane.domain.model import Account, AccountStatus, Scheme
from keyplane.errors import AlreadyInState, BatchTooLarge, DuplicateInRequest, NameTaken, SubAccountLimit
from keyplane.services._context import ServiceContext, changes_detail
from keyplane.services._minting import hash_passphrase, insert_sub_key, key_detail
from keyplane.services.grants import check_grant
from keyplane.services.types import Actor, IssuedKey, NewSubAccountWithKey, SubAccountOutcome
from keyplane.store import listing


class SubAccountService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def create_sub_accounts(
        self, actor: Actor, names: Sequence[str], scheme: Scheme, permissions: Sequence[str]
    ) -> SubAccountOutcome:
        """Makes each name that can be made; the others land in ``failed`` (Bitget's failureList)."""
        ctx = self._ctx
        main = ctx.main_of(actor)
        limit = ctx.policy.for_scheme(scheme).sub_accounts_per_main
        outcome = SubAccountOutcome()
        with ctx.store.transaction() as tx:
            ctx.lock_main(tx, main)
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
                ctx.audit(tx, actor, "subaccount.create", str(account.uid), {"name": account.name})
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
        ctx = self._ctx
        main = ctx.main_of(actor)
        limit = ctx.policy.for_scheme(scheme).sub_accounts_per_main
        with ctx.unique_names(), ctx.store.transaction() as tx:
            ctx.lock_main(tx, main)
            if tx.count_sub_accounts(main.uid) >= limit:
                raise SubAccountLimit(f"at most {limit} sub-accounts", limit=limit)
            if tx.alias_taken(name):
                raise NameTaken("alias already exists", field="alias")
            account = tx.insert_account(
                name=name, parent_uid=main.uid, label=label, email=email, share_kyc=share_kyc,
                permissions=tuple(permissions),
            )
            ctx.audit(tx, actor, "subaccount.create", str(account.uid), {"name": name})
        return account

    def batch_create_sub_accounts_with_keys(
        self, actor: Actor, entries: Sequence[NewSubAccountWithKey], scheme: Scheme
    ) -> list[IssuedKey]:
        """All or nothing: one entry that cannot be made and the whole batch is refused."""
        ctx = self._ctx
        main = ctx.main_of(actor)
        limits = ctx.policy.for_scheme(scheme)
        if len(entries) > limits.batch_size:
            raise BatchTooLarge(f"at most {limits.batch_size} entries", limit=limits.batch_size)
        lowered = [entry.name.lower() for entry in entries]
        if len(set(lowered)) != len(lowered):
            raise DuplicateInRequest("the same name twice in one request", field="subAccountName")
        specs = [entry.key for entry in entries]
        ctx.check_grants_now(actor, scheme, specs)  # before the slow hashes
        hashes = [hash_passphrase(entry.key.passphrase) for entry in entries]
        issued: list[IssuedKey] = []
        with ctx.unique_names(), ctx.store.transaction() as tx:
            ctx.lock_main(tx, main)
            caller = ctx.caller_key(tx, actor)
            for spec in specs:
                check_grant(caller, scheme, spec.permissions, spec.key_type)
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
                key = insert_sub_key(ctx, tx, account, scheme, entry.key, passphrase_hash)
                issued.append(key)
                ctx.audit(tx, actor, "subaccount.create", str(account.uid), {"name": entry.name})
                ctx.audit(tx, actor, "apikey.create", key.key.api_key, key_detail(key.key))
        return issued

    def get_sub_account(self, actor: Actor, *, uid: int | None = None, public_id: str | None = None) -> Account:
        with self._ctx.store.reading() as tx:
            return self._ctx.owned_sub(tx, actor, uid=uid, public_id=public_id)

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
        main = self._ctx.main_of(actor)
        with self._ctx.store.reading() as tx:
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
        ctx = self._ctx
        changes: dict[str, object] = {}
        with ctx.unique_names(), ctx.store.transaction() as tx:
            account = ctx.owned_sub(tx, actor, uid=uid, public_id=public_id, lock=True)
            if permissions is not None:
                caller = ctx.caller_key(tx, actor)
                # a Bitget sub-account's permissions are the ceiling of its keys: raising it is a grant too
                # (a WhiteBIT key has no permission list; its two flags stay within a type 1 key)
                if caller is not None and caller.scheme is Scheme.BITGET:
                    check_grant(caller, Scheme.BITGET, permissions, None)
                changes["permissions"] = tuple(permissions)
            if status is not None:
                changes["status"] = status
            if name is not None and name != account.name:
                if tx.alias_taken(name, except_uid=account.uid):
                    raise NameTaken("alias already exists", field="alias")
                changes["name"] = name
            updated = tx.update_account(account.uid, **changes)
            ctx.audit(tx, actor, "subaccount.modify", str(account.uid), changes_detail(changes))
        return updated

    def set_sub_account_status(
        self, actor: Actor, status: AccountStatus, *, uid: int | None = None, public_id: str | None = None
    ) -> Account:
        """Block/unblock: unlike modify, asking for the state it is already in is an error."""
        ctx = self._ctx
        with ctx.store.transaction() as tx:
            account = ctx.owned_sub(tx, actor, uid=uid, public_id=public_id, lock=True)
            if account.status is status:
                raise AlreadyInState(f"sub-account already {status.value}")
            updated = tx.update_account(account.uid, status=status)
            action = "subaccount.freeze" if status is AccountStatus.FREEZE else "subaccount.unfreeze"
            ctx.audit(tx, actor, action, str(account.uid), {})
        return updated

    def delete_sub_account(self, actor: Actor, *, uid: int | None = None, public_id: str | None = None) -> None:
        ctx = self._ctx
        with ctx.store.transaction() as tx:
            account = ctx.owned_sub(tx, actor, uid=uid, public_id=public_id, lock=True)
            tx.delete_account(account.uid)
            ctx.audit(tx, actor, "subaccount.delete", str(account.uid), {"name": account.name})

    def page_sub_accounts(
        self, *, main_uid: int | None = None, name_contains: str | None = None, status: str | None = None,
        after_uid: int | None = None, limit: int = 100,
    ) -> list[Account]:
        """The operator's view: sub-accounts (of one main account, or all) after UID ``after_uid``, oldest first."""
        with self._ctx.store.reading() as tx:
            return listing.sub_accounts(
                tx, main_uid=main_uid, name_contains=name_contains, status=status, after_uid=after_uid, limit=limit
            )

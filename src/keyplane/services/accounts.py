"""Main accounts: the venue's customers, managed by the operator (the command line, the native API)."""

from __future__ import annotations

from keyplane.domain.model import Account, AccountStatus
from keyplane.errors import AccountNotFound, AlreadyInState, InvalidName, NameTaken
from keyplane.services._context import ServiceContext
from keyplane.services.types import Operator
from keyplane.store import listing


class AccountService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def create_main_account(self, name: str, *, by: Operator | None = None) -> Account:
        """The name must be new, whatever its case: the unique index of migration 0006 decides (the store
        turns its refusal into ``NameTaken``, also for the later of two simultaneous creations); the
        look-up first only spares a refused creation its insert."""
        name = name.strip()
        if not name or len(name) > 64:
            raise InvalidName("a main account's name is 1 to 64 characters", field="name")
        with self._ctx.store.transaction() as tx:
            if tx.main_account_named(name) is not None:
                raise NameTaken(f"a main account is already named {name!r}", field="name")
            account = tx.insert_account(name=name, parent_uid=None, permissions=())
            self._ctx.operator_audit(
                tx, by, "account.create", str(account.uid), account_uid=account.uid, detail={"name": name}
            )
        return account

    def list_main_accounts(
        self, *, name_contains: str | None = None, status: AccountStatus | None = None, limit: int = 100,
        offset: int = 0,
    ) -> list[Account]:
        with self._ctx.store.reading() as tx:
            return tx.list_main_accounts(
                name_contains=name_contains, status=status.value if status else None, limit=limit, offset=offset
            )

    def main_account(self, uid: int) -> Account:
        with self._ctx.store.reading() as tx:
            account = tx.get_account(uid)
        if account is None or not account.is_main:
            raise AccountNotFound(f"no main account {uid}")
        return account

    def account_of(self, uid: int) -> Account | None:
        """Any account, main or sub, or None."""
        with self._ctx.store.reading() as tx:
            return tx.get_account(uid)

    def set_main_account_status(self, uid: int, status: AccountStatus, *, by: Operator | None = None) -> Account:
        """Freeze or unfreeze a main account: a frozen one's own keys stop verifying (its sub-accounts keep their
        own status: the verifier reads the status of the key's account only)."""
        with self._ctx.store.transaction() as tx:
            account = tx.lock_account(uid)
            if account is None or not account.is_main:
                raise AccountNotFound(f"no main account {uid}")
            if account.status is status:
                raise AlreadyInState(f"main account {uid} is already {status.value}")
            updated = tx.update_account(uid, status=status)
            action = "account.freeze" if status is AccountStatus.FREEZE else "account.unfreeze"
            self._ctx.operator_audit(tx, by, action, str(uid), account_uid=uid)
        return updated

    def delete_main_account(self, uid: int, *, by: Operator | None = None) -> Account:
        """Deletes an empty main account; one that still holds keys or sub-accounts is refused (revoke and
        delete them first), so that no key disappears with it unseen."""
        with self._ctx.store.transaction() as tx:
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
            self._ctx.operator_audit(tx, by, "account.delete", str(uid), account_uid=uid, detail={"name": account.name})
        return account

    def page_main_accounts(
        self, *, name_contains: str | None = None, status: str | None = None, after_uid: int | None = None,
        limit: int = 100,
    ) -> list[Account]:
        """Main accounts after UID ``after_uid``, oldest first (the native API's keyset pages)."""
        with self._ctx.store.reading() as tx:
            return listing.main_accounts(
                tx, name_contains=name_contains, status=status, after_uid=after_uid, limit=limit
            )

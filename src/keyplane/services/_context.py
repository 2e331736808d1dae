"""What every use-case shares: the store, the master keys, the policy, and the few steps they all take
(who the caller is, which rows they own, locking, the audit line). Services hold one ``ServiceContext``;
none of them holds another service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import sqlalchemy.exc

from keyplane import crypto
from keyplane.domain.model import Account, AccountStatus, ApiKey, EndpointRule, Scheme
from keyplane.domain.policy import Policy
from keyplane.errors import AccountNotFound, ApiKeyNotFound, GrantExceeded, NameTaken, NotMainAccount, Unavailable
from keyplane.services.grants import READ_WRITE, check_grant
from keyplane.services.types import Actor, NewKeySpec, Operator
from keyplane.store import Store, Transaction


class ServiceContext:
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

    # who asks -----------------------------------------------------------------------------------

    def main_of(self, actor: Actor) -> Account:
        if not actor.account.is_main:
            raise NotMainAccount("the caller's key must belong to a main account")
        return actor.account

    def caller_key(self, tx: Transaction, actor: Actor) -> ApiKey | None:
        """The key the caller signed with (what it may grant), or None for the operator: the command line
        acts with no key and no ceiling."""
        if actor.api_key is None:
            return None
        key = tx.find_api_key(actor.api_key)
        if key is None or key.account_uid != actor.account.uid:
            raise GrantExceeded("the caller's key no longer exists", field=READ_WRITE)
        return key

    def check_grants_now(self, actor: Actor, scheme: Scheme, specs: Sequence[NewKeySpec]) -> None:
        """The grant check ahead of the slow passphrase hashes, so a key that may not mint keys costs
        no argon2id; the transaction checks again."""
        if actor.api_key is None:
            return
        with self.store.reading() as tx:
            caller = self.caller_key(tx, actor)
        for spec in specs:
            check_grant(caller, scheme, spec.permissions, spec.key_type)

    # what they own ------------------------------------------------------------------------------

    def lock_main(self, tx: Transaction, main: Account) -> None:
        if tx.lock_account(main.uid) is None:
            raise AccountNotFound("main account is gone")

    def owned_sub(
        self,
        tx: Transaction,
        actor: Actor,
        *,
        uid: int | None = None,
        public_id: str | None = None,
        lock: bool = False,
    ) -> Account:
        main = self.main_of(actor)
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

    def owned_key(
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
        main = self.main_of(actor)
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

    # sealing and auditing -----------------------------------------------------------------------

    def sealing_key(self, tx: Transaction) -> crypto.MasterKey:
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

    def audit(self, tx: Transaction, actor: Actor, action: str, target: str, detail: dict[str, object]) -> None:
        """One audit line for a change made by a signed caller (the operator's own changes write theirs
        with no actor)."""
        if actor.secret != "current":  # signed with the secret a rotation replaced, in its grace period
            detail = {**detail, "signedWith": actor.secret}
        tx.add_audit(
            action=action, target=target, account_uid=actor.account.main_uid,
            # through the native API the operator acts for the account: the token is the actor, not the account
            actor_uid=None if actor.token else actor.account.uid,
            actor_key=actor.api_key, ip=actor.ip, detail=detail, actor_token=actor.token,
        )

    def operator_audit(
        self, tx: Transaction, by: Operator | None, action: str, target: str, *, account_uid: int | None,
        detail: dict[str, object] | None = None,
    ) -> None:
        """One audit line for a change the operator made: from the command line (``by`` None) or through the
        native management API (its token's id and the caller's IP)."""
        tx.add_audit(
            action=action, target=target, account_uid=account_uid, actor_uid=None, actor_key=None,
            ip=by.ip if by else None, detail=detail, actor_token=by.token if by else None,
        )

    def unique_names(self) -> UniqueNames:
        return UniqueNames()


class UniqueNames:
    """Turns a lost race on the venue-wide unique alias index into ``NameTaken``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> Literal[False]:
        if isinstance(exc, sqlalchemy.exc.IntegrityError):
            raise NameTaken("alias already exists", field="alias") from None
        return False


def changes_detail(changes: dict[str, object]) -> dict[str, object]:
    """An audit line's account of what changed, in plain JSON values."""
    out: dict[str, object] = {}
    for name, value in changes.items():
        if isinstance(value, tuple):
            out[name] = [e.url if isinstance(e, EndpointRule) else e for e in value]
        elif isinstance(value, AccountStatus):
            out[name] = value.value
        else:
            out[name] = value
    return out

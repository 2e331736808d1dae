"""keyplane's use-cases, one service per thing they act on. Each use-case runs in one store transaction
and writes one audit event per mutation.

Nothing here knows HTTP or any wire dialect: dialects, the native API and the command line translate
their requests into these calls and the results back into their own shapes. Rules come from ``domain``;
limits from the ``Policy``. The services share one ``ServiceContext`` (store, master keys, policy) and
never call one another: what two of them need (making a key's row, the caller's ceiling) lives in the
context or in ``_minting``/``grants``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from keyplane import crypto
from keyplane.domain.policy import Policy
from keyplane.services._context import ServiceContext
from keyplane.services._minting import normalize_ip_list
from keyplane.services.accounts import AccountService
from keyplane.services.audit import AuditService
from keyplane.services.idempotency import IdempotencyService
from keyplane.services.keys import KeyService
from keyplane.services.lifecycle import KeyLifecycleService, RotatedKey
from keyplane.services.sealing import SealingService
from keyplane.services.subaccounts import SubAccountService
from keyplane.services.tokens import TokenService
from keyplane.services.types import Actor, IssuedKey, NewKeySpec, NewSubAccountWithKey, Operator, SubAccountOutcome
from keyplane.store import Store

KeyListener = Callable[[Sequence[str]], None]


class KeyplaneService:
    """All the use-cases over one store, one master key and one policy."""

    def __init__(
        self, store: Store, master_key: crypto.MasterKey | crypto.MasterKeyRing, policy: Policy | None = None
    ) -> None:
        self.context = ServiceContext(store, master_key, policy)
        self.accounts = AccountService(self.context)
        self.subaccounts = SubAccountService(self.context)
        self.keys = KeyService(self.context)
        self.lifecycle = KeyLifecycleService(self.context)  # rotation with an overlap, expiry
        self.sealing = SealingService(self.context)
        self.audit = AuditService(self.context)
        self.tokens = TokenService(store)
        self.idempotency = IdempotencyService(store)

    @property
    def store(self) -> Store:
        return self.context.store

    @property
    def policy(self) -> Policy:
        return self.context.policy

    @property
    def master_keys(self) -> crypto.MasterKeyRing:
        return self.context.master_keys

    @property
    def master_key(self) -> crypto.MasterKey:
        """The keys in force now: the newest seals, the older ones still open."""
        return self.context.master_key

    def on_keys_changed(self, listener: KeyListener) -> None:
        """``listener`` hears of every key whose record or account changed, right after the commit."""
        self.context.store.on_keys_changed(listener)


__all__ = [
    "AccountService",
    "Actor",
    "AuditService",
    "IssuedKey",
    "KeyLifecycleService",
    "KeyService",
    "KeyplaneService",
    "NewKeySpec",
    "NewSubAccountWithKey",
    "Operator",
    "RotatedKey",
    "SealingService",
    "SubAccountOutcome",
    "SubAccountService",
    "normalize_ip_list",
]

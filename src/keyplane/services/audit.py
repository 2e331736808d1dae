"""Reading the audit trail (every use-case writes its own line, in its own transaction)."""

from __future__ import annotations

from collections.abc import Sequence

from keyplane.domain.model import AuditEvent
from keyplane.services._context import ServiceContext
from keyplane.store import listing


class AuditService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def audit_events(self, *, account_uid: int | None = None, limit: int = 1000) -> list[AuditEvent]:
        with self._ctx.store.reading() as tx:
            return tx.list_audit(account_uid=account_uid, limit=limit)

    def page_events(
        self,
        *,
        account_uid: int | None = None,
        api_key: str | None = None,
        actions: Sequence[str] = (),
        actor_token: str | None = None,
        since: int | None = None,
        until: int | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Events before id ``before_id``, newest first; ``api_key``: about the key or made with it; ``since``
        inclusive, ``until`` exclusive (Unix ms)."""
        with self._ctx.store.reading() as tx:
            return listing.audit(
                tx, account_uid=account_uid, api_key=api_key, actions=actions, actor_token=actor_token,
                since=since, until=until, before_id=before_id, limit=limit,
            )

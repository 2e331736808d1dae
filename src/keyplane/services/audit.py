"""Reading the audit trail (every use-case writes its own line, in its own transaction)."""

from __future__ import annotations

from keyplane.domain.model import AuditEvent
from keyplane.services._context import ServiceContext


class AuditService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def audit_events(self, *, account_uid: int | None = None, limit: int = 1000) -> list[AuditEvent]:
        with self._ctx.store.reading() as tx:
            return tx.list_audit(account_uid=account_uid, limit=limit)

"""Audit events over the native management API: filtered by account, key, action, token and time."""

from __future__ import annotations

from keyplane.dialects.common import run_service
from keyplane.domain.model import AuditEvent
from keyplane.native.api import Call
from keyplane.native.errors import ApiError
from keyplane.native.paging import decode_cursor, encode_cursor, limit_of, text_param, time_param, uid_param
from keyplane.native.schemas import AuditEventView, AuditPage
from keyplane.services import KeyplaneService


async def list_events(svc: KeyplaneService, call: Call) -> AuditPage:
    query = call.query
    limit = limit_of(query)
    actions = [a for a in (text_param(query, "action", 640) or "").split(",") if a]
    if len(actions) > 20 or any(len(a) > 64 for a in actions):
        raise ApiError(400, "invalid_parameter", "action: at most 20 comma-separated actions", field="action")
    since, until = time_param(query, "since"), time_param(query, "until")
    before = int(decode_cursor(query["cursor"], "audit", (int,))[0]) if "cursor" in query else None
    found: list[AuditEvent] = await run_service(
        svc.audit.page_events, account_uid=uid_param(query, "account_uid"),
        api_key=text_param(query, "api_key", 128), actions=actions, actor_token=text_param(query, "actor_token"),
        since=since, until=until, before_id=before, limit=limit + 1,
    )
    next_cursor = encode_cursor("audit", [found[limit - 1].id]) if len(found) > limit else None
    return AuditPage(data=[AuditEventView.of(e) for e in found[:limit]], next_cursor=next_cursor)

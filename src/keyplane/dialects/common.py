"""What every dialect's routes share: who the verified caller is, and how a service call is made."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from keyplane.auth import SignedRequest, VerifyResult
from keyplane.service import Actor


def actor_of(request: SignedRequest, result: VerifyResult) -> Actor:
    """The caller of a verified request, as the service's audit events record it."""
    assert result.account is not None and result.key is not None
    return Actor(account=result.account, api_key=result.key.api_key, ip=request.client_ip)


async def run_service(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs a use-case in a thread: they hash passphrases and wait on database locks, which must not
    block the event loop that verifies every other request."""
    return await asyncio.to_thread(function, *args, **kwargs)

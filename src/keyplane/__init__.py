"""keyplane: the sub-account and API-key plane of a trading venue.

The public surface: the app factory, the verifier and its request/result types, the settings.
Each is imported on first use: ``keyplane.client`` (the SDK that signs requests) must not pay for the
server's imports (SQLAlchemy, the store, the dialects: over a second) to sign one request.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyplane.app import create_app
    from keyplane.auth import Reason, Requirement, SignedRequest, Verifier, VerifyResult
    from keyplane.config import Settings
    from keyplane.endpoints import EndpointTable
    from keyplane.runtime import open_verifier

_HOMES = {
    "EndpointTable": "keyplane.endpoints",
    "Reason": "keyplane.auth",
    "Requirement": "keyplane.auth",
    "Settings": "keyplane.config",
    "SignedRequest": "keyplane.auth",
    "Verifier": "keyplane.auth",
    "VerifyResult": "keyplane.auth",
    "create_app": "keyplane.app",
    "open_verifier": "keyplane.runtime",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'keyplane' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__all__ = [
    "EndpointTable",
    "Reason",
    "Requirement",
    "Settings",
    "SignedRequest",
    "Verifier",
    "VerifyResult",
    "create_app",
    "open_verifier",
]

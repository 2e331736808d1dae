"""Request verification: one verifier, one module per signing scheme.

``Verifier`` is imported on first use: the verifier imports the rate limiter, which imports this package's
``request`` module, so importing ``keyplane.ratelimit`` first would otherwise meet a half-made module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keyplane.auth.request import Reason, Requirement, SignedRequest, VerifyResult

if TYPE_CHECKING:
    from keyplane.auth.verifier import Verifier


def __getattr__(name: str) -> Any:
    if name == "Verifier":
        from keyplane.auth.verifier import Verifier

        return Verifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Reason", "Requirement", "SignedRequest", "Verifier", "VerifyResult"]

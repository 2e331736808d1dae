"""Request verification: one verifier, one module per signing scheme."""

from keyplane.auth.request import Reason, Requirement, SignedRequest, VerifyResult
from keyplane.auth.verifier import Verifier

__all__ = ["Reason", "Requirement", "SignedRequest", "Verifier", "VerifyResult"]

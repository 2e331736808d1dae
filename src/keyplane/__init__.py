"""keyplane: the sub-account and API-key plane of a trading venue.

The public surface: the app factory, the verifier and its request/result types, the settings.
"""

from keyplane.app import create_app
from keyplane.auth import Reason, Requirement, SignedRequest, Verifier, VerifyResult
from keyplane.config import Settings
from keyplane.endpoints import EndpointTable
from keyplane.runtime import open_verifier

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

"""keyplane: the sub-account and API-key plane of a trading venue.

The public surface: the app factory, the verifier and its request/result types, the settings.
"""

from keyplane.app import create_app
from keyplane.auth import Reason, Requirement, SignedRequest, Verifier, VerifyResult
from keyplane.config import Settings

__all__ = ["Reason", "Requirement", "Settings", "SignedRequest", "Verifier", "VerifyResult", "create_app"]

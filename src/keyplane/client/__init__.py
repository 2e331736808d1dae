"""keyplane's Python SDK, on httpx (sync and async).

Sign requests to Bitget v2 and WhiteBIT v4, whether they go to keyplane or to the exchanges themselves::

    import httpx
    from keyplane.client import BitgetAuth, WhiteBITAuth

    with httpx.Client(base_url="https://api.bitget.com", auth=BitgetAuth(key, secret, passphrase)) as http:
        http.get("/api/v2/spot/account/info")

Manage accounts, sub-accounts, keys and read the audit log through keyplane's native API, with an
operator token::

    from keyplane.client import Client

    with Client("http://127.0.0.1:8080", token="kpt_...") as keyplane:
        account = keyplane.accounts.create("acme")
"""

from keyplane.client._bitget_auth import BitgetAuth
from keyplane.client._client import AsyncClient, Client
from keyplane.client._errors import (
    ApiError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from keyplane.client._models import Account, AuditEvent, CreatedKey, Key, RotatedKey, SubAccount
from keyplane.client._whitebit_auth import WhiteBITAuth

__all__ = [
    "Account",
    "ApiError",
    "AsyncClient",
    "AuditEvent",
    "AuthenticationError",
    "BitgetAuth",
    "Client",
    "ConflictError",
    "CreatedKey",
    "InvalidRequestError",
    "Key",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RotatedKey",
    "ServerError",
    "SubAccount",
    "WhiteBITAuth",
]

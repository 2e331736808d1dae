"""keyplane's Python SDK: sign requests to Bitget v2 and WhiteBIT v4, whether they go to keyplane or to
the exchanges themselves, with httpx (sync or async)::

    import httpx
    from keyplane.client import BitgetAuth, WhiteBITAuth

    with httpx.Client(base_url="https://api.bitget.com", auth=BitgetAuth(key, secret, passphrase)) as http:
        http.get("/api/v2/spot/account/info")
"""

from keyplane.client._bitget_auth import BitgetAuth
from keyplane.client._whitebit_auth import WhiteBITAuth

__all__ = ["BitgetAuth", "WhiteBITAuth"]

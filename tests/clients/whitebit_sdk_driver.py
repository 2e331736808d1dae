"""Drives whitebit-python-sdk 1.1.17 against a keyplane server; runs in .venv-whitebit-sdk, not .venv.

The SDK pins urllib3<2 and ccxt 4.5.90 pins urllib3==2.8.0, so the two cannot share a venv: the tests run
this script with the SDK's own interpreter (``scripts/test-deps`` builds it) and read one JSON object from
its stdout. The SDK is used exactly as its README shows: ``WhitebitApi`` with an ``HmacTransport``, which
signs every call with an integer nonce and ``nonceWindow: true``.

    python whitebit_sdk_driver.py BASE_URL API_KEY API_SECRET
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from typing import Any

import httpx
from whitebit import WhitebitApi
from whitebit.core.api_error import ApiError
from whitebit.environment import WhitebitApiEnvironment
from whitebit.hmac_transport import HmacTransport
from whitebit.sub_account.types.create_sub_account_request_permissions import CreateSubAccountRequestPermissions
from whitebit.sub_account_api_keys.types.edit_sub_account_api_key_request_urls_item import (
    EditSubAccountApiKeyRequestUrlsItem,
)


def dump(model: Any) -> Any:
    return model.dict(by_alias=True) if hasattr(model, "dict") else model


def main(base_url: str, api_key: str, api_secret: str) -> dict[str, Any]:
    environment = WhitebitApiEnvironment(base=base_url, production=base_url, eu=base_url)
    client = WhitebitApi(
        environment=environment,
        api_key=api_key,
        txc_payload="",
        txc_signature="",
        httpx_client=httpx.Client(transport=HmacTransport(api_secret=api_secret), timeout=10),
    )
    out: dict[str, Any] = {"sdkVersion": metadata.version("whitebit-python-sdk")}
    sub = client.sub_account.create_sub_account(
        alias="sdk" + api_key[:8],
        share_kyc=True,
        permissions=CreateSubAccountRequestPermissions(spot_enabled=True, collateral_enabled=False),
    )
    out["subAccount"] = dump(sub)
    out["subAccounts"] = dump(client.sub_account.list_sub_accounts(limit=10))
    keys = client.sub_account_api_keys
    created = keys.create_sub_account_api_key(type=1, sub_account_id=sub.id, title="SDK key")
    out["created"] = dump(created)
    out["createdType2"] = dump(keys.create_sub_account_api_key(type=2, sub_account_id=sub.id, title="SDK key 2"))
    out["listed"] = dump(keys.list_sub_account_api_keys(sub_account_id=sub.id))
    out["edited"] = keys.edit_sub_account_api_key(
        api_key_id=created.id,
        title="SDK renamed",
        urls=[EditSubAccountApiKeyRequestUrlsItem(url="/api/v4/main-account/balance", enable=True)],
    )
    out["ipCreated"] = dump(keys.create_sub_account_api_key_ip_address(api_key_id=created.id, ip="10.1.2.3"))
    out["ipListed"] = dump(keys.list_sub_account_api_key_ip_addresses(api_key_id=created.id))
    out["reset"] = keys.reset_sub_account_api_key(api_key_id=created.id)
    out["listedAfter"] = dump(keys.list_sub_account_api_keys(sub_account_id=sub.id, limit=1, offset=0))
    try:
        keys.create_sub_account_api_key(type=3, sub_account_id=sub.id, title="bad type")
    except ApiError as error:
        out["badType"] = {"status": error.status_code, "body": error.body}
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4]), default=str))

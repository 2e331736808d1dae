"""The endpoint table: what each private endpoint needs, the most specific rule first, the operator's
overrides from JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.endpoints import EndpointTable, endpoints_from_env

TABLE = EndpointTable.defaults()


@pytest.mark.parametrize(
    ("method", "path", "permission"),
    [
        ("GET", "/api/v2/spot/account/assets", "read"),
        ("GET", "/api/v2/spot/trade/unfilled-orders", "read"),
        ("POST", "/api/v2/spot/trade/place-order", "spot_trade"),
        ("POST", "/api/v2/spot/trade/batch-orders", "spot_trade"),
        ("POST", "/api/v2/spot/wallet/transfer", "transfer"),
        ("POST", "/api/v2/spot/wallet/withdrawal", "transfer"),
        ("GET", "/api/v2/mix/position/all-position", "read"),
        ("POST", "/api/v2/mix/order/place-order", "contract_trade"),
        ("POST", "/api/v2/margin/crossed/place-order", "margin_trade"),
        ("GET", "/api/v2/margin/crossed/account/assets", "read"),
    ],
)
def test_bitget_defaults_map_main_private_endpoints(method: str, path: str, permission: str) -> None:
    requirement = TABLE.requirement_for(Scheme.BITGET, method, path)
    assert requirement.permission == permission
    assert requirement.rate_limit is not None


@pytest.mark.parametrize(
    ("path", "key_type"),
    [
        ("/api/v4/trade-account/balance", 1),
        ("/api/v4/order/new", 1),
        ("/api/v4/order/cancel", 1),
        ("/api/v4/collateral-account/balance", 1),
        ("/api/v4/main-account/balance", 1),
        ("/api/v4/main-account/withdraw", 2),
        ("/api/v4/main-account/transfer", 2),
        ("/api/v4/main-account/address", 2),
    ],
)
def test_whitebit_defaults_map_key_types(path: str, key_type: int) -> None:
    assert TABLE.requirement_for(Scheme.WHITEBIT, "POST", path).key_type == key_type


def test_exact_rule_beats_prefix_and_longer_prefix_beats_shorter() -> None:
    withdraw = TABLE.lookup("POST", "/api/v4/main-account/withdraw")
    assert withdraw is not None and withdraw.rate_name == "withdraw"
    moved = TABLE.lookup("POST", "/api/v4/main-account/create-new-address")
    assert moved is not None and moved.rate_name == "main-account-move"


def test_unlisted_path_gets_the_scheme_fallback() -> None:
    assert TABLE.lookup("GET", "/api/v2/unknown/thing") is None
    assert TABLE.requirement_for(Scheme.BITGET, "GET", "/api/v2/unknown/thing").permission == "read"
    assert TABLE.requirement_for(Scheme.WHITEBIT, "POST", "/api/v4/unknown").key_type == 1


def test_operator_rule_overrides_a_default_of_the_same_pattern() -> None:
    table = EndpointTable.from_overrides(
        {"rules": [{"path": "/api/v2/spot/trade/*", "method": "POST", "permission": "read", "rate_limit": None}]}
    )
    requirement = table.requirement_for(Scheme.BITGET, "POST", "/api/v2/spot/trade/place-order")
    assert requirement.permission == "read" and requirement.rate_limit is None
    # other defaults stay
    assert table.lookup("POST", "/api/v2/mix/order/place-order") is not None


def test_replace_drops_the_defaults_and_fallback_is_configurable() -> None:
    table = EndpointTable.from_overrides(
        {
            "replace": True,
            "rules": [{"path": "/api/v2/spot/account/assets", "method": "GET", "permission": "read"}],
            "fallback": {"bitget": {"permission": "transfer"}},
        }
    )
    assert table.lookup("POST", "/api/v2/spot/trade/place-order") is None
    assert table.requirement_for(Scheme.BITGET, "POST", "/api/v2/spot/trade/place-order").permission == "transfer"


@pytest.mark.parametrize(
    "overrides",
    [
        {"rules": [{"path": "no-slash"}]},
        {"rules": [{"path": "/x", "permission": "withdraw_all"}]},
        {"rules": [{"path": "/x", "key_type": 3}]},
        {"rules": [{"path": "/x", "rate_limit": "lots"}]},
        {"fallback": {"kraken": {}}},
    ],
)
def test_bad_overrides_are_refused_at_start(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        EndpointTable.from_overrides(overrides)


def test_settings_read_the_table_from_env_text_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rule = {"rules": [{"path": "/api/v2/spot/account/bills", "method": "GET", "permission": "transfer"}]}
    monkeypatch.setenv("KEYPLANE_ENDPOINTS", json.dumps(rule))
    assert Settings.from_env().endpoints.requirement_for(None, "GET", "/api/v2/spot/account/bills").permission == (
        "transfer"
    )
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"rules": [{"path": "/api/v2/spot/account/bills", "permission": "margin_trade"}]}))
    monkeypatch.setenv("KEYPLANE_ENDPOINTS_FILE", str(path))
    table = endpoints_from_env()
    assert table.requirement_for(None, "GET", "/api/v2/spot/account/bills").permission == "margin_trade"


def test_table_round_trips_to_json() -> None:
    dumped = TABLE.to_json()
    assert {"path", "method", "key_type", "rate_limit", "rate_name"} <= set(dumped["rules"][0])
    assert json.dumps(dumped)

"""The endpoint table: what each private endpoint needs, the most specific rule first, the operator's
overrides from JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.domain.requirements import Requirement
from keyplane.endpoints import DEFAULT_FALLBACK, EndpointTable, Refusal, endpoints_from_env

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
    assert isinstance(requirement, Requirement)
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
    requirement = TABLE.requirement_for(Scheme.WHITEBIT, "POST", path)
    assert isinstance(requirement, Requirement) and requirement.key_type == key_type


def test_exact_rule_beats_prefix_and_longer_prefix_beats_shorter() -> None:
    withdraw = TABLE.lookup(Scheme.WHITEBIT, "POST", "/api/v4/main-account/withdraw")
    assert withdraw is not None and withdraw.rate_name == "withdraw"
    moved = TABLE.lookup(Scheme.WHITEBIT, "POST", "/api/v4/main-account/create-new-address")
    assert moved is not None and moved.rate_name == "main-account-move"


def test_unlisted_path_is_refused_unless_the_operator_allows_the_read_fallback() -> None:
    assert TABLE.lookup(Scheme.BITGET, "GET", "/api/v2/unknown/thing") is None
    assert TABLE.requirement_for(Scheme.BITGET, "GET", "/api/v2/unknown/thing") is Refusal.NO_RULE
    assert TABLE.requirement_for(Scheme.WHITEBIT, "POST", "/api/v4/unknown") is Refusal.NO_RULE
    table = EndpointTable.from_overrides({"read_fallback": True})
    fallback = table.requirement_for(Scheme.BITGET, "GET", "/api/v2/unknown/thing")
    assert isinstance(fallback, Requirement) and fallback.permission == "read" and not fallback.replay_protect
    # a GET only, under the dialect's own prefix only
    assert table.requirement_for(Scheme.BITGET, "POST", "/api/v2/unknown/thing") is Refusal.NO_RULE
    assert table.requirement_for(Scheme.BITGET, "GET", "/api/v4/unknown") is Refusal.NO_RULE
    assert table.requirement_for(Scheme.BITGET, "GET", "/elsewhere") is Refusal.NO_RULE
    assert table.requirement_for(Scheme.WHITEBIT, "POST", "/api/v4/unknown") is Refusal.NO_RULE
    assert table.requirement_for(Scheme.WHITEBIT, "GET", "/api/v4/unknown") == DEFAULT_FALLBACK[Scheme.WHITEBIT]


def test_operator_rule_overrides_a_default_of_the_same_pattern() -> None:
    table = EndpointTable.from_overrides(
        {"rules": [{"path": "/api/v2/spot/trade/*", "method": "POST", "permission": "read", "rate_limit": None}]}
    )
    requirement = table.requirement_for(Scheme.BITGET, "POST", "/api/v2/spot/trade/place-order")
    assert isinstance(requirement, Requirement)
    assert requirement.permission == "read" and requirement.rate_limit is None
    # other defaults stay
    assert table.lookup(Scheme.BITGET, "POST", "/api/v2/mix/order/place-order") is not None


def test_replace_drops_the_defaults_and_fallback_is_configurable() -> None:
    table = EndpointTable.from_overrides(
        {
            "replace": True,
            "read_fallback": True,
            "rules": [{"path": "/api/v2/spot/account/assets", "method": "GET", "permission": "read"}],
            "fallback": {"bitget": {"permission": "transfer"}},
        }
    )
    assert table.lookup(Scheme.BITGET, "POST", "/api/v2/spot/trade/place-order") is None
    assert table.requirement_for(Scheme.BITGET, "POST", "/api/v2/spot/trade/place-order") is Refusal.NO_RULE
    fallback = table.requirement_for(Scheme.BITGET, "GET", "/api/v2/spot/trade/fills")
    assert isinstance(fallback, Requirement) and fallback.permission == "transfer"
    # keyplane's own routes stay: the dialects serve them whatever the operator's table says
    assert table.lookup(Scheme.BITGET, "POST", "/api/v2/user/create-virtual-subaccount") is not None


@pytest.mark.parametrize(
    "overrides",
    [
        {"rules": [{"path": "no-slash"}]},
        {"rules": [{"path": "/x", "permission": "withdraw_all"}]},
        {"rules": [{"path": "/x", "key_type": 3}]},
        {"rules": [{"path": "/x", "rate_limit": "lots"}]},
        {"fallback": {"kraken": {}}},
        {"rules": [{"path": "/venue/private/*"}]},  # outside both prefixes: must name its dialect
        {"rules": [{"path": "/x", "dialect": "kraken"}]},
        {"rules": [{"path": "/api/v2/spot/../wallet/withdrawal"}]},
        {"rules": [{"path": "/api/v2//spot/*"}]},
        {"rules": [{"path": "/api/v2/spot/%2e/*"}]},
        {"rules": [{"path": "/api/v2/spot;x/*"}]},
        {"rules": [{"path": "/api/v2/spot/trade/*", "method": "post"}]},
        {"rules": [{"path": "/api/v2/spot/trade/*", "method": "GET POST"}]},
        {"rules": [{"path": "/api/v2/spot/trade/*", "replay_protect": "no"}]},
        {"rules": [{"path": "/api/v2/spot/trade/*", "key_type": True}]},
        {"rules": {"path": "/api/v2/x"}},
        {"rules": ["/api/v2/x"]},
        {"read_fallback": "yes"},
        {"readFallback": True},
    ],
)
def test_bad_overrides_are_refused_at_start(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        EndpointTable.from_overrides(overrides)


def test_settings_read_the_table_from_env_text_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rule = {"rules": [{"path": "/api/v2/spot/account/bills", "method": "GET", "permission": "transfer"}]}
    monkeypatch.setenv("KEYPLANE_ENDPOINTS", json.dumps(rule))
    found = Settings.from_env().endpoints.lookup(Scheme.BITGET, "GET", "/api/v2/spot/account/bills")
    assert found is not None and found.permission == "transfer"
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"rules": [{"path": "/api/v2/spot/account/bills", "permission": "margin_trade"}]}))
    monkeypatch.setenv("KEYPLANE_ENDPOINTS_FILE", str(path))
    table = endpoints_from_env()
    found = table.lookup(Scheme.BITGET, "GET", "/api/v2/spot/account/bills")
    assert found is not None and found.permission == "margin_trade"


def test_table_round_trips_to_json() -> None:
    dumped = TABLE.to_json()
    assert {"path", "method", "dialect", "key_type", "rate_limit", "rate_name", "replay_protect"} <= set(
        dumped["rules"][0]
    )
    assert dumped["read_fallback"] is False
    assert json.dumps(dumped)

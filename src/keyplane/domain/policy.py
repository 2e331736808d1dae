"""Limits the venue sets: the documented defaults per dialect, overridable by the operator."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from limits import parse


@dataclass(frozen=True, slots=True)
class DialectLimits:
    sub_accounts_per_main: int
    keys_per_sub_account: int
    ips_per_key: int
    batch_size: int
    # endpoint name -> "N/second" style rate limit, counted per main-account UID
    rate_limits: dict[str, str] = field(default_factory=dict)
    default_rate_limit: str = "10/second"


BITGET_DEFAULTS = DialectLimits(
    sub_accounts_per_main=20,
    keys_per_sub_account=10,
    ips_per_key=30,
    batch_size=5,
    rate_limits={
        "batch-create-subaccount-and-apikey": "1/second",
        "create-virtual-subaccount": "5/second",
        "modify-virtual-subaccount": "5/second",
        "create-virtual-subaccount-apikey": "5/second",
        "modify-virtual-subaccount-apikey": "5/second",
        # The EN page says 10/1s, the zh-CN page 1/1s; ccxt's cost weight (2) agrees with 10/s.
        "virtual-subaccount-list": "10/second",
        # "5 req/sec/UID" on the current page (Get Subaccount Apikey List; exchanges.md 1.1 #7), not the
        # older bitget.cc page's 10/1s nor ccxt's cost weight (2, i.e. 10/s)
        "virtual-subaccount-apikey-list": "5/second",
        # "Frequency limit: 1 time/1s (User ID)" on Get Account Information (EN and zh-CN pages); ccxt
        # agrees: 'v2/spot/account/info': {'cost': 20}, i.e. 1/s
        "account-info": "1/second",
    },
)

WHITEBIT_DEFAULTS = DialectLimits(
    # WhiteBIT documents no sub-account count limit; 100 is keyplane's default, not WhiteBIT's.
    sub_accounts_per_main=100,
    keys_per_sub_account=50,
    ips_per_key=50,
    batch_size=1,
    default_rate_limit="1000/10 seconds",
)


@dataclass(frozen=True, slots=True)
class Policy:
    bitget: DialectLimits = BITGET_DEFAULTS
    whitebit: DialectLimits = WHITEBIT_DEFAULTS

    def for_scheme(self, scheme: str) -> DialectLimits:
        return self.whitebit if scheme == "whitebit" else self.bitget

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any]) -> Policy:
        """``{"bitget": {"sub_accounts_per_main": 50, "rate_limits": {...}}, "whitebit": {...}}``.

        Raises ``ValueError`` naming the setting for an unknown name or a value of the wrong kind: a
        mistyped override must stop the server at start, not fail every request that reads it.
        """
        base = cls()
        unknown = set(overrides) - {"bitget", "whitebit"}
        if unknown:
            raise ValueError(f"unknown policy dialect(s): {', '.join(sorted(unknown))}")
        values: dict[str, DialectLimits] = {}
        for name in ("bitget", "whitebit"):
            current: DialectLimits = getattr(base, name)
            changes = dict(overrides.get(name, {}))
            _check_overrides(name, changes)
            if "rate_limits" in changes:
                changes["rate_limits"] = {**current.rate_limits, **changes["rate_limits"]}
            values[name] = dataclasses.replace(current, **changes)
        return cls(**values)


_COUNTS = ("sub_accounts_per_main", "keys_per_sub_account", "ips_per_key", "batch_size")


def _check_overrides(dialect: str, changes: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(DialectLimits)}
    unknown = set(changes) - known
    if unknown:
        raise ValueError(f"unknown {dialect} policy setting(s): {', '.join(sorted(unknown))}")
    for name in _COUNTS:
        value = changes.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{dialect}.{name} must be a positive integer, not {value!r}")
    rates = changes.get("rate_limits", {})
    if not isinstance(rates, dict):
        raise ValueError(f'{dialect}.rate_limits must map endpoint names to limits like "5/second"')
    named = {f"{dialect}.rate_limits.{k}": v for k, v in rates.items()}
    if "default_rate_limit" in changes:
        named[f"{dialect}.default_rate_limit"] = changes["default_rate_limit"]
    for setting, value in named.items():
        try:
            parse(value)
        except (ValueError, TypeError):
            raise ValueError(f'{setting} must be a limit like "5/second", not {value!r}') from None

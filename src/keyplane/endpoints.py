"""Permissions per endpoint: what a key needs to call each of the venue's private endpoints.

The verifier looks a request up here when its caller gives no ``Requirement`` (``POST /v1/verify``, the
nginx gateway, ``Verifier.verify(request)`` in-process). Keyplane's own management routes declare their
requirements in their dialect and do not use this table.

A rule matches a method (``"*"`` for any) and a path: exact (``/api/v2/spot/trade/place-order``) or a
prefix ending in ``*`` (``/api/v2/spot/trade/*``). The most specific rule wins: an exact path before any
prefix, a longer prefix before a shorter one, a rule naming its method before ``"*"``, and an operator's
rule before a default one for the same pattern. A path no rule matches gets the scheme's fallback
(Bitget: ``read``; WhiteBIT: key type 1), so an unlisted endpoint is never open to an unsigned caller.

Bitget needs a permission name (``read``, ``spot_trade``, ``margin_trade``, ``contract_trade``,
``transfer``); WhiteBIT a key type (1: info and trading; 2: adds deposits and withdrawals), and a key
that restricts its endpoints (its ``urls`` allowlist) must list the exact path.

The operator changes the table with JSON, in ``KEYPLANE_ENDPOINTS_FILE`` (a path) or ``KEYPLANE_ENDPOINTS``
(the text)::

    {"replace": false,
     "rules": [{"path": "/api/v2/spot/trade/*", "method": "POST", "permission": "spot_trade",
                "rate_limit": "5/second", "rate_name": "spot-trade"},
               {"path": "/api/v4/main-account/withdraw", "key_type": 2, "rate_limit": null},
               {"path": "/api/v2/spot/trade/cancel-order", "method": "POST", "permission": "spot_trade",
                "replay_protect": false}],
     "fallback": {"bitget": {"permission": "read"}, "whitebit": {"key_type": 1}}}

``replay_protect`` (true by default) makes a signed Bitget request that changes state (any method but
``GET``: a GET is never remembered) valid once within its timestamp window: a repeat is refused
(``auth/nonces.py``); ``false`` turns that off for the rule. WhiteBIT requests are once-only by their nonce,
whatever the flag says.

``replace: true`` drops the defaults. ``rate_limit`` is a ``limits`` string (``"10/second"``), counted
per calling account and ``rate_name``; ``null`` means no rate limit for that endpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyplane.domain.model import Scheme
from keyplane.domain.requirements import Requirement

BITGET_PERMISSIONS = frozenset({"read", "spot_trade", "margin_trade", "contract_trade", "transfer"})


@dataclass(frozen=True, slots=True)
class EndpointRule:
    """One row of the table: a method and an exact path or ``prefix*``, and what it needs."""

    path: str
    requirement: Requirement
    method: str = "*"
    operator: bool = False  # set by an override: wins over a default rule of the same pattern

    @property
    def is_prefix(self) -> bool:
        return self.path.endswith("*")

    def to_json(self) -> dict[str, Any]:
        req = self.requirement
        out: dict[str, Any] = {"path": self.path, "method": self.method}
        if req.permission is not None:
            out["permission"] = req.permission
        out.update(key_type=req.key_type, rate_limit=req.rate_limit, rate_name=req.rate_name)
        if req.main_only:
            out["main_only"] = True
        if req.main_needs_ip:
            out["main_needs_ip"] = True
        out["replay_protect"] = req.replay_protect
        return out


def _rule(
    path: str,
    method: str = "*",
    *,
    rate: str | None,
    name: str,
    permission: str | None = None,
    key_type: int = 1,
    main_only: bool = False,
) -> EndpointRule:
    requirement = Requirement(
        permission=permission, key_type=key_type, main_only=main_only, rate_limit=rate, rate_name=name
    )
    return EndpointRule(path, requirement, method.upper())


# Bitget v2's main private families. Figures are Bitget's documented per-UID limits (www.bitget.com
# api-doc: "10 times/1s (UID)" for most trading and account calls, 5/s for withdrawals and transfers).
# A GET of a trading family only reads (orders, fills, positions): ``read``; a POST trades.
BITGET_DEFAULTS: tuple[EndpointRule, ...] = (
    _rule("/api/v2/spot/account/*", "GET", permission="read", rate="10/second", name="spot-account"),
    _rule("/api/v2/spot/trade/*", "GET", permission="read", rate="20/second", name="spot-trade-read"),
    _rule("/api/v2/spot/trade/*", "POST", permission="spot_trade", rate="10/second", name="spot-trade"),
    _rule("/api/v2/spot/wallet/*", "GET", permission="read", rate="10/second", name="spot-wallet-read"),
    _rule("/api/v2/spot/wallet/transfer", "POST", permission="transfer", rate="10/second", name="transfer"),
    _rule("/api/v2/spot/wallet/subaccount-transfer", "POST", permission="transfer", rate="10/second", name="transfer"),
    # Withdrawals are the most sensitive money movement; Bitget's v2 vocabulary has no separate
    # withdraw permission for virtual sub-account keys, so ``transfer`` guards them here.
    _rule("/api/v2/spot/wallet/withdrawal", "POST", permission="transfer", rate="5/second", name="withdrawal"),
    _rule("/api/v2/spot/wallet/*", "POST", permission="transfer", rate="10/second", name="spot-wallet"),
    _rule("/api/v2/mix/account/*", "GET", permission="read", rate="10/second", name="mix-account"),
    _rule("/api/v2/mix/account/*", "POST", permission="contract_trade", rate="5/second", name="mix-account-set"),
    _rule("/api/v2/mix/position/*", "GET", permission="read", rate="10/second", name="mix-position"),
    _rule("/api/v2/mix/order/*", "GET", permission="read", rate="20/second", name="mix-order-read"),
    _rule("/api/v2/mix/order/*", "POST", permission="contract_trade", rate="10/second", name="mix-order"),
    _rule("/api/v2/margin/*", "GET", permission="read", rate="10/second", name="margin-read"),
    _rule("/api/v2/margin/*", "POST", permission="margin_trade", rate="10/second", name="margin-trade"),
    _rule("/api/v2/account/*", "GET", permission="read", rate="10/second", name="account"),
    _rule("/api/v2/user/*", permission="read", rate="10/second", main_only=True, name="user"),
)

# WhiteBIT v4: every private call is a POST. Trading and balances need a type 1 key; moving money out
# (withdrawals, transfers between balances, deposit addresses, codes) needs type 2 ("info, trading,
# deposits, withdraws"). WhiteBIT documents 1000 requests per 10 s for most private endpoints.
WHITEBIT_DEFAULTS: tuple[EndpointRule, ...] = (
    _rule("/api/v4/trade-account/*", "POST", key_type=1, rate="1000/10 seconds", name="trade-account"),
    _rule("/api/v4/order/*", "POST", key_type=1, rate="1000/10 seconds", name="order"),
    _rule("/api/v4/orders", "POST", key_type=1, rate="1000/10 seconds", name="order"),
    _rule("/api/v4/collateral-account/*", "POST", key_type=1, rate="1000/10 seconds", name="collateral"),
    _rule("/api/v4/main-account/balance", "POST", key_type=1, rate="1000/10 seconds", name="main-account"),
    _rule("/api/v4/main-account/history", "POST", key_type=1, rate="1000/10 seconds", name="main-account"),
    _rule("/api/v4/main-account/fee", "POST", key_type=1, rate="1000/10 seconds", name="main-account"),
    _rule("/api/v4/main-account/*", "POST", key_type=2, rate="1000/10 seconds", name="main-account-move"),
    _rule("/api/v4/main-account/withdraw", "POST", key_type=2, rate="100/10 seconds", name="withdraw"),
    _rule("/api/v4/main-account/withdraw-pay", "POST", key_type=2, rate="100/10 seconds", name="withdraw"),
    _rule("/api/v4/main-account/transfer", "POST", key_type=2, rate="100/10 seconds", name="transfer"),
    _rule("/api/v4/sub-account/*", "POST", key_type=1, main_only=True, rate="1000/10 seconds", name="sub-account"),
)

DEFAULT_FALLBACK: dict[Scheme, Requirement] = {
    Scheme.BITGET: Requirement(permission="read", rate_limit="10/second", rate_name="other"),
    Scheme.WHITEBIT: Requirement(key_type=1, rate_limit="1000/10 seconds", rate_name="other"),
}


class EndpointTable:
    """Maps ``(scheme, method, path)`` to a ``Requirement``; exact paths by dict, prefixes longest first."""

    __slots__ = ("_exact", "_fallback", "_memo", "_prefixes", "rules")

    MEMO_SIZE = 4096  # distinct (scheme, method, path) answers remembered; the venue has far fewer paths

    def __init__(self, rules: Iterable[EndpointRule], fallback: Mapping[Scheme, Requirement] | None = None) -> None:
        self.rules: tuple[EndpointRule, ...] = tuple(rules)
        self._memo: dict[tuple[Scheme | None, str, str], Requirement] = {}
        self._fallback = dict(DEFAULT_FALLBACK)
        self._fallback.update(fallback or {})
        # later operator rules replace earlier rules of the same (method, path)
        exact: dict[tuple[str, str], EndpointRule] = {}
        prefixes: dict[tuple[str, str], EndpointRule] = {}
        for rule in sorted(self.rules, key=lambda r: r.operator):
            target = prefixes if rule.is_prefix else exact
            key = (rule.method, rule.path.rstrip("*") if rule.is_prefix else rule.path)
            target[key] = rule
        self._exact = {key: rule.requirement for key, rule in exact.items()}
        # longest prefix first; for the same prefix a named method before "*"
        self._prefixes: tuple[tuple[str, str, Requirement], ...] = tuple(
            (prefix, method, rule.requirement)
            for (method, prefix), rule in sorted(
                prefixes.items(), key=lambda item: (-len(item[0][1]), item[0][0] == "*")
            )
        )

    @classmethod
    def defaults(cls) -> EndpointTable:
        return cls(BITGET_DEFAULTS + WHITEBIT_DEFAULTS)

    def lookup(self, method: str, path: str) -> Requirement | None:
        """The most specific rule's requirement, or None when no rule matches."""
        method = method.upper()
        exact = self._exact.get((method, path)) or self._exact.get(("*", path))
        if exact is not None:
            return exact
        for prefix, rule_method, requirement in self._prefixes:
            if (rule_method == method or rule_method == "*") and path.startswith(prefix):
                return requirement
        return None

    def requirement_for(self, scheme: Scheme | None, method: str, path: str) -> Requirement:
        """What a request needs: its rule's requirement, or the scheme's fallback. Memoized per path."""
        memo_key = (scheme, method, path)
        found = self._memo.get(memo_key)
        if found is not None:
            return found
        found = self.lookup(method, path)
        if found is None:
            found = self._fallback.get(scheme or Scheme.BITGET, DEFAULT_FALLBACK[Scheme.BITGET])
        if len(self._memo) >= self.MEMO_SIZE:  # unknown paths cannot grow it without bound
            self._memo.clear()
        self._memo[memo_key] = found
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "rules": [rule.to_json() for rule in self.rules],
            "fallback": {scheme.value: _requirement_json(req) for scheme, req in self._fallback.items()},
        }

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> EndpointTable:
        """The defaults changed by an operator's JSON (the module docstring shows the shape)."""
        if not isinstance(overrides, Mapping):
            raise ValueError("the endpoint table override must be a JSON object")
        base: tuple[EndpointRule, ...] = () if overrides.get("replace") else BITGET_DEFAULTS + WHITEBIT_DEFAULTS
        extra = tuple(_parse_rule(entry) for entry in overrides.get("rules", ()))
        fallback = {
            Scheme(name): _parse_requirement(spec, f"fallback {name}")
            for name, spec in dict(overrides.get("fallback", {})).items()
        }
        return cls(base + extra, fallback)


def _requirement_json(req: Requirement) -> dict[str, Any]:
    return {
        "permission": req.permission,
        "key_type": req.key_type,
        "rate_limit": req.rate_limit,
        "rate_name": req.rate_name,
        "replay_protect": req.replay_protect,
    }


def _parse_requirement(spec: Mapping[str, Any], where: str) -> Requirement:
    permission = spec.get("permission")
    if permission is not None and permission not in BITGET_PERMISSIONS:
        raise ValueError(f"{where}: unknown permission {permission!r}")
    key_type = spec.get("key_type", 1)
    if key_type not in (1, 2):
        raise ValueError(f"{where}: key_type must be 1 or 2")
    rate_limit = spec.get("rate_limit")
    if rate_limit is not None:
        from limits import parse  # validate now, not on the first request

        parse(rate_limit)
    return Requirement(
        permission=permission,
        key_type=key_type,
        main_only=bool(spec.get("main_only", False)),
        main_needs_ip=bool(spec.get("main_needs_ip", False)),
        rate_limit=rate_limit,
        rate_name=str(spec.get("rate_name") or spec.get("path") or "default"),
        # on unless the operator turns it off (a GET is never remembered; WhiteBIT's nonce is once-only anyway)
        replay_protect=_flag(spec.get("replay_protect", True), f"{where}: replay_protect"),
    )


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false")
    return value


def _parse_rule(entry: Mapping[str, Any]) -> EndpointRule:
    path = entry.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"endpoint rule needs a path starting with '/': {entry!r}")
    method = str(entry.get("method", "*")).upper()
    return EndpointRule(path, _parse_requirement(entry, path), method, operator=True)


def endpoints_from_env(env: Mapping[str, str] | None = None) -> EndpointTable:
    """``KEYPLANE_ENDPOINTS_FILE`` (a JSON file) or ``KEYPLANE_ENDPOINTS`` (JSON text), else the defaults."""
    env = os.environ if env is None else env
    path = env.get("KEYPLANE_ENDPOINTS_FILE")
    text = env.get("KEYPLANE_ENDPOINTS")
    if path:
        return EndpointTable.from_overrides(json.loads(Path(path).read_text()))
    if text:
        return EndpointTable.from_overrides(json.loads(text))
    return EndpointTable.defaults()


__all__ = ["EndpointRule", "EndpointTable", "endpoints_from_env"]

"""Permissions per endpoint: what a key needs to call each of the venue's private endpoints.

The verifier looks a request up here when its caller gives no ``Requirement`` (``POST /v1/verify``, the
nginx gateway, ``Verifier.verify(request)`` in-process). Keyplane's own management routes are rows of it
too (``management_rules``): the dialects take their requirements from those rows, so the gateway and
``/v1/verify`` know them as the dialects serve them.

Every rule belongs to one dialect (``dialect``; by default ``/api/v2/...`` is Bitget's, ``/api/v4/...``
WhiteBIT's), and a request is looked up among its signing key's dialect only: a key is never valid on a
path of another dialect, nor on a path of none. A rule matches a method (``"*"`` for any) and a path,
case-sensitively: exact (``/api/v2/spot/trade/place-order``) or a prefix ending in ``*``
(``/api/v2/spot/trade/*``). The most specific rule wins: an exact path before any prefix, a longer
prefix before a shorter one, a rule naming its method before ``"*"``, and an operator's rule before a
default one for the same pattern; a path with an upper-case letter matches exact rules only (a
case-insensitive upstream would read it as the lower-case endpoint). A request no rule of its dialect
matches is refused
(``Refusal.NO_RULE``); so is a method no rule of the path names (``PUT`` where a rule says ``POST``). With
``"read_fallback": true`` a ``GET`` under the dialect's prefix that no rule names at all gets the
dialect's fallback instead (Bitget: ``read``; WhiteBIT: key type 1). It is off by default: an endpoint
the table does not know may move money, and a read-only key must not reach it.

A request target that an upstream could read otherwise than the table does (``domain/target.py``: dot
segments, ``//``, ``%``-encoding, ``;``, ``\\``, control or non-ASCII characters, a method not in upper
case) is ``Refusal.BAD_TARGET``, whatever the table holds.

Bitget needs a permission name (``read``, ``spot_trade``, ``margin_trade``, ``contract_trade``,
``transfer``); WhiteBIT a key type (1: info and trading; 2: adds deposits and withdrawals), and a key
that restricts its endpoints (its ``urls`` allowlist) must list the exact path.

The operator changes the table with JSON, in ``KEYPLANE_ENDPOINTS_FILE`` (a path) or ``KEYPLANE_ENDPOINTS``
(the text)::

    {"replace": false,
     "read_fallback": false,
     "rules": [{"path": "/api/v2/spot/trade/*", "method": "POST", "permission": "spot_trade",
                "rate_limit": "5/second", "rate_name": "spot-trade"},
               {"path": "/api/v4/main-account/withdraw", "key_type": 2, "rate_limit": null},
               {"path": "/venue/private/*", "dialect": "bitget", "method": "GET", "permission": "read"},
               {"path": "/api/v2/spot/trade/cancel-order", "method": "POST", "permission": "spot_trade",
                "replay_protect": false}],
     "fallback": {"bitget": {"permission": "read"}, "whitebit": {"key_type": 1}}}

``replay_protect`` (default: true, except for ``GET`` rules) makes a signed Bitget request that changes
state (any method but ``GET``: a GET is never remembered) valid once within its timestamp window: a
repeat is refused (``auth/nonces.py``); ``false`` turns that off for the rule. WhiteBIT requests are
once-only by their nonce, whatever the flag says.

``replace: true`` drops the defaults (keyplane's own management routes stay). ``rate_limit`` is a
``limits`` string (``"10/second"``), counted per calling account and ``rate_name``; ``null`` means no
rate limit for that endpoint. ``dialect`` is required for a path outside ``/api/v2/`` and ``/api/v4/``.
A mistake anywhere stops the server at start.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from keyplane.domain.model import Scheme
from keyplane.domain.policy import Policy
from keyplane.domain.requirements import Requirement
from keyplane.domain.target import clean_method, clean_path

BITGET_PERMISSIONS = frozenset({"read", "spot_trade", "margin_trade", "contract_trade", "transfer"})

# Where each dialect's API lives: a rule under one of these belongs to that dialect unless it says
# otherwise, and the read-only fallback never reaches outside them.
DIALECT_PREFIXES: dict[Scheme, str] = {Scheme.BITGET: "/api/v2/", Scheme.WHITEBIT: "/api/v4/"}


class Refusal(enum.Enum):
    """Why the table gives a request no requirement (the verifier answers it with the dialect's error)."""

    BAD_TARGET = "BAD_TARGET"  # a target an upstream could read otherwise (domain/target.py)
    NO_RULE = "NO_RULE"  # no rule of the key's dialect names this method and path


@dataclass(frozen=True, slots=True)
class EndpointRule:
    """One row of the table: a dialect, a method and an exact path or ``prefix*``, and what it needs."""

    path: str
    requirement: Requirement
    method: str = "*"
    operator: bool = False  # set by an override: wins over a default rule of the same pattern
    dialect: Scheme = Scheme.BITGET

    @property
    def is_prefix(self) -> bool:
        return self.path.endswith("*")

    def matches_path(self, path: str) -> bool:
        return path.startswith(self.path[:-1]) if self.is_prefix else path == self.path

    def to_json(self) -> dict[str, Any]:
        req = self.requirement
        out: dict[str, Any] = {"path": self.path, "method": self.method, "dialect": self.dialect.value}
        if req.permission is not None:
            out["permission"] = req.permission
        out.update(key_type=req.key_type, rate_limit=req.rate_limit, rate_name=req.rate_name)
        if req.main_only:
            out["main_only"] = True
        if req.main_needs_ip:
            out["main_needs_ip"] = True
        out["replay_protect"] = req.replay_protect
        return out


def dialect_by_prefix(path: str) -> Scheme | None:
    for scheme, prefix in DIALECT_PREFIXES.items():
        if path.startswith(prefix):
            return scheme
    return None


def _rule(
    path: str,
    method: str = "*",
    *,
    rate: str | None,
    name: str,
    permission: str | None = None,
    key_type: int = 1,
    main_only: bool = False,
    main_needs_ip: bool = False,
) -> EndpointRule:
    requirement = Requirement(
        permission=permission,
        key_type=key_type,
        main_only=main_only,
        main_needs_ip=main_needs_ip,
        rate_limit=rate,
        rate_name=name,
        replay_protect=method != "GET",
    )
    dialect = dialect_by_prefix(path)
    assert dialect is not None, path
    return EndpointRule(path, requirement, method, dialect=dialect)


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
)

# keyplane's own management routes, served by dialects/bitget.py and dialects/whitebit.py (which take
# their requirements from these rows): (method, name under /api/v2/user/ or /api/v4/).
BITGET_USER_ROUTES: tuple[tuple[str, str], ...] = (
    ("POST", "create-virtual-subaccount"),
    ("POST", "modify-virtual-subaccount"),
    ("POST", "batch-create-subaccount-and-apikey"),
    ("GET", "virtual-subaccount-list"),
    ("POST", "create-virtual-subaccount-apikey"),
    ("POST", "modify-virtual-subaccount-apikey"),
    ("GET", "virtual-subaccount-apikey-list"),
)
BITGET_ACCOUNT_INFO = "/api/v2/spot/account/info"
WHITEBIT_MANAGED_ROUTES: tuple[str, ...] = (
    "sub-account/create",
    "sub-account/delete",
    "sub-account/edit",
    "sub-account/list",
    "sub-account/block",
    "sub-account/unblock",
    "sub-account/api-key/create",
    "sub-account/api-key/edit",
    "sub-account/api-key/delete",
    "sub-account/api-key/list",
    "sub-account/api-key/reset",
    "sub-account/api-key/ip-address/list",
    "sub-account/api-key/ip-address/create",
    "sub-account/api-key/ip-address/delete",
    "sub-account/transfer",
    "sub-account/balances",
    "sub-account/transfer/history",
    "sub-account/kyc-url",
    "sub-account/withdraw/unconfirmed-list",
    "sub-account/withdraw/confirm",
)


def management_rules(policy: Policy | None = None) -> tuple[EndpointRule, ...]:
    """keyplane's own routes, rate limits from ``policy``: main accounts only; Bitget's main key bound to an IP."""
    policy = policy or Policy()
    bitget, whitebit = policy.bitget, policy.whitebit
    rules = [
        _rule(
            "/api/v2/user/" + name, method, main_only=True, main_needs_ip=True,
            rate=bitget.rate_limits.get(name, bitget.default_rate_limit), name=name,
        )
        for method, name in BITGET_USER_ROUTES
    ]
    # Get Account Information: "SPOT read or SPOT read/write permission needed" (the page's description on
    # bitget.fit and bitgetapp.com). ``read`` is granted by any trading or transfer permission as well
    # (domain/scopes.bitget_grants), so a read or trade key passes and a key with no permission gets 40014.
    rules.append(_rule(
        BITGET_ACCOUNT_INFO, "GET", permission="read", rate=bitget.rate_limits.get("account-info"),
        name="account-info",
    ))
    rules += [
        _rule(
            "/api/v4/" + name, "POST", main_only=True,
            rate=whitebit.rate_limits.get(name, whitebit.default_rate_limit), name=name,
        )
        for name in WHITEBIT_MANAGED_ROUTES
    ]
    return tuple(rules)


DEFAULT_FALLBACK: dict[Scheme, Requirement] = {
    Scheme.BITGET: Requirement(permission="read", rate_limit="10/second", rate_name="other", replay_protect=False),
    Scheme.WHITEBIT: Requirement(key_type=1, rate_limit="1000/10 seconds", rate_name="other", replay_protect=False),
}

_Answer = Requirement | Refusal


class _DialectRules:
    """One dialect's rules: exact paths by dict, prefixes longest first."""

    __slots__ = ("exact", "paths", "prefixes")

    def __init__(self, rules: Iterable[EndpointRule]) -> None:
        # later operator rules replace earlier rules of the same (method, path)
        exact: dict[tuple[str, str], EndpointRule] = {}
        prefixes: dict[tuple[str, str], EndpointRule] = {}
        for rule in sorted(rules, key=lambda r: r.operator):
            target = prefixes if rule.is_prefix else exact
            key = (rule.method, rule.path.rstrip("*") if rule.is_prefix else rule.path)
            target[key] = rule
        self.exact = {key: rule.requirement for key, rule in exact.items()}
        self.paths = frozenset(path for _method, path in exact)
        # longest prefix first; for the same prefix a named method before "*"
        self.prefixes: tuple[tuple[str, str, Requirement], ...] = tuple(
            (prefix, method, rule.requirement)
            for (method, prefix), rule in sorted(
                prefixes.items(), key=lambda item: (-len(item[0][1]), item[0][0] == "*")
            )
        )

    def lookup(self, method: str, path: str) -> Requirement | None:
        exact = self.exact.get((method, path)) or self.exact.get(("*", path))
        if exact is not None or path != path.lower():
            # A prefix names a family of lower-case paths (as every venue path is), and a case-insensitive
            # upstream reads "/api/v2/spot/wallet/Withdrawal" as the withdrawal: a path with an upper-case
            # letter matches an exact rule or nothing (the read fallback skips it too).
            return exact
        for prefix, rule_method, requirement in self.prefixes:
            if (rule_method == method or rule_method == "*") and path.startswith(prefix):
                return requirement
        return None

    def names_path(self, path: str) -> bool:
        """Whether any rule, of any method, matches ``path``."""
        return path in self.paths or any(path.startswith(prefix) for prefix, _m, _r in self.prefixes)


class EndpointTable:
    """Maps ``(scheme, method, path)`` to a ``Requirement``, or to the ``Refusal`` that stops it."""

    __slots__ = ("_by_scheme", "_fallback", "_memo", "_targets", "read_fallback", "rules")

    MEMO_SIZE = 4096  # distinct (scheme, method, path) answers remembered; the venue has far fewer paths
    # Longer paths are answered without being remembered: no venue path comes near, and 4096 remembered
    # paths of 60 KB each (a /v1/verify call's body allows that) would hold 250 MB per process.
    MEMO_PATH_MAX = 512

    def __init__(
        self,
        rules: Iterable[EndpointRule],
        fallback: Mapping[Scheme, Requirement] | None = None,
        *,
        read_fallback: bool = False,
    ) -> None:
        self.rules: tuple[EndpointRule, ...] = tuple(rules)
        self.read_fallback = read_fallback
        self._memo: dict[tuple[Scheme | None, str, str], _Answer] = {}
        self._targets: dict[tuple[Scheme | None, str, str], Refusal | None] = {}
        self._fallback = dict(DEFAULT_FALLBACK)
        self._fallback.update(fallback or {})
        self._by_scheme = {
            scheme: _DialectRules(rule for rule in self.rules if rule.dialect is scheme) for scheme in Scheme
        }

    @classmethod
    def defaults(cls, policy: Policy | None = None) -> EndpointTable:
        return cls(management_rules(policy) + BITGET_DEFAULTS + WHITEBIT_DEFAULTS)

    def lookup(self, scheme: Scheme, method: str, path: str) -> Requirement | None:
        """The most specific rule of ``scheme``'s dialect for ``method`` and ``path``, or None."""
        return self._by_scheme[scheme].lookup(method, path)

    def dialect_of(self, path: str) -> Scheme | None:
        """The dialect whose rules name ``path`` (one only), else the one whose prefix it is under."""
        named = [scheme for scheme, rules in self._by_scheme.items() if rules.names_path(path)]
        return named[0] if len(named) == 1 else dialect_by_prefix(path)

    def requirement_for(self, scheme: Scheme | None, method: str, path: str) -> Requirement | Refusal:
        """What a request needs, or why it is refused. Memoized per ``(scheme, method, path)``."""
        memo_key = (scheme, method, path)
        found = self._memo.get(memo_key)
        if found is not None:
            return found
        found = self._resolve(scheme, method, path)
        if len(path) > self.MEMO_PATH_MAX or len(method) > 16:
            return found
        if len(self._memo) >= self.MEMO_SIZE:  # unknown paths cannot grow it without bound
            self._memo.clear()
        self._memo[memo_key] = found
        return found

    def _resolve(self, scheme: Scheme | None, method: str, path: str) -> Requirement | Refusal:
        if not (clean_method(method) and clean_path(path)):
            return Refusal.BAD_TARGET
        if scheme is None:
            return Refusal.NO_RULE
        rules = self._by_scheme[scheme]
        found = rules.lookup(method, path)
        if found is not None:
            return found
        if (
            self.read_fallback
            and method == "GET"
            and path == path.lower()
            and path.startswith(DIALECT_PREFIXES[scheme])
            and not any(other.names_path(path) for other in self._by_scheme.values())
        ):
            return self._fallback[scheme]
        return Refusal.NO_RULE

    def check_target(self, scheme: Scheme | None, method: str, path: str) -> Refusal | None:
        """For a caller that brings its own requirement: the target must be clean and, if the table gives
        the path a dialect, ``scheme``'s. Memoized."""
        memo_key = (scheme, method, path)
        if memo_key in self._targets:
            return self._targets[memo_key]
        refusal: Refusal | None = None
        if not (clean_method(method) and clean_path(path)):
            refusal = Refusal.BAD_TARGET
        elif scheme is not None and self.dialect_of(path) not in (None, scheme):
            refusal = Refusal.NO_RULE
        if len(path) > self.MEMO_PATH_MAX or len(method) > 16:
            return refusal
        if len(self._targets) >= self.MEMO_SIZE:
            self._targets.clear()
        self._targets[memo_key] = refusal
        return refusal

    def to_json(self) -> dict[str, Any]:
        return {
            "read_fallback": self.read_fallback,
            "rules": [rule.to_json() for rule in self.rules],
            "fallback": {scheme.value: _requirement_json(req) for scheme, req in self._fallback.items()},
        }

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any], policy: Policy | None = None) -> EndpointTable:
        """The defaults changed by an operator's JSON (the module docstring shows the shape)."""
        if not isinstance(overrides, Mapping):
            raise ValueError("the endpoint table override must be a JSON object")
        unknown = set(overrides) - {"replace", "read_fallback", "rules", "fallback"}
        if unknown:
            raise ValueError(f"endpoint table: unknown setting(s) {', '.join(sorted(unknown))}")
        base = management_rules(policy)
        if not overrides.get("replace"):
            base += BITGET_DEFAULTS + WHITEBIT_DEFAULTS
        entries = overrides.get("rules", [])
        if not isinstance(entries, list):
            raise ValueError("endpoint table: rules must be a list")
        extra = tuple(_parse_rule(entry) for entry in entries)
        fallback_spec = overrides.get("fallback", {})
        if not isinstance(fallback_spec, Mapping):
            raise ValueError("endpoint table: fallback must map a dialect to a requirement")
        fallback = {
            _scheme(name, "fallback"): replace(_parse_requirement(spec, f"fallback {name}"), replay_protect=False)
            for name, spec in fallback_spec.items()
        }
        read_fallback = overrides.get("read_fallback", False)
        if not isinstance(read_fallback, bool):
            raise ValueError("endpoint table: read_fallback must be true or false")
        return cls(base + extra, fallback, read_fallback=read_fallback)


def _requirement_json(req: Requirement) -> dict[str, Any]:
    return {
        "permission": req.permission,
        "key_type": req.key_type,
        "rate_limit": req.rate_limit,
        "rate_name": req.rate_name,
        "replay_protect": req.replay_protect,
    }


def _scheme(name: object, where: str) -> Scheme:
    try:
        return Scheme(str(name))
    except ValueError:
        raise ValueError(f"{where}: unknown dialect {name!r} (bitget or whitebit)") from None


def _parse_requirement(spec: Mapping[str, Any], where: str, method: str = "*") -> Requirement:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: must be a JSON object")
    permission = spec.get("permission")
    if permission is not None and permission not in BITGET_PERMISSIONS:
        raise ValueError(f"{where}: unknown permission {permission!r}")
    key_type = spec.get("key_type", 1)
    if isinstance(key_type, bool) or key_type not in (1, 2):
        raise ValueError(f"{where}: key_type must be 1 or 2")
    rate_limit = spec.get("rate_limit")
    if rate_limit is not None:
        from limits import parse  # validate now, not on the first request

        try:
            parse(rate_limit)
        except (ValueError, TypeError):
            raise ValueError(f'{where}: rate_limit must be a limit like "5/second", not {rate_limit!r}') from None
    flags = {}
    for name in ("main_only", "main_needs_ip", "replay_protect"):
        if name in spec and not isinstance(spec[name], bool):
            raise ValueError(f"{where}: {name} must be true or false")
        flags[name] = spec.get(name)
    replay_protect = flags["replay_protect"]
    return Requirement(
        permission=permission,
        key_type=key_type,
        main_only=bool(flags["main_only"]),
        main_needs_ip=bool(flags["main_needs_ip"]),
        rate_limit=rate_limit,
        rate_name=str(spec.get("rate_name") or spec.get("path") or "default"),
        replay_protect=method != "GET" if replay_protect is None else bool(replay_protect),
    )


def _parse_rule(entry: Mapping[str, Any]) -> EndpointRule:
    if not isinstance(entry, Mapping):
        raise ValueError(f"endpoint rule must be a JSON object: {entry!r}")
    path = entry.get("path")
    # a prefix's stem plus one letter, or the exact path, must be a path the verifier lets through
    if not isinstance(path, str) or not clean_path(path[:-1] + "x" if path.endswith("*") else path):
        raise ValueError(
            f"endpoint rule needs a path of '/'-separated segments of letters, digits, '-', '_', '~' and "
            f"inner dots, optionally ending in '*': {entry!r}"
        )
    method = entry.get("method", "*")
    if not isinstance(method, str) or not (method == "*" or clean_method(method)):
        raise ValueError(f"{path}: method must be an upper-case method such as GET or POST, or '*'")
    named = entry.get("dialect")
    dialect = _scheme(named, path) if named is not None else dialect_by_prefix(path)
    if dialect is None:
        raise ValueError(f"{path}: name its dialect (\"dialect\": \"bitget\" or \"whitebit\")")
    return EndpointRule(path, _parse_requirement(entry, path, method), method, operator=True, dialect=dialect)


def endpoints_from_env(env: Mapping[str, str] | None = None, policy: Policy | None = None) -> EndpointTable:
    """``KEYPLANE_ENDPOINTS_FILE`` (a JSON file) or ``KEYPLANE_ENDPOINTS`` (JSON text), else the defaults."""
    env = os.environ if env is None else env
    path = env.get("KEYPLANE_ENDPOINTS_FILE")
    text = env.get("KEYPLANE_ENDPOINTS")
    source, raw = (f"KEYPLANE_ENDPOINTS_FILE {path}", Path(path).read_text()) if path else ("KEYPLANE_ENDPOINTS", text)
    if not raw:
        return EndpointTable.defaults(policy)
    try:
        overrides = json.loads(raw)
    except ValueError as error:
        raise ValueError(f"{source} is not valid JSON: {error}") from None
    try:
        return EndpointTable.from_overrides(overrides, policy)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


__all__ = [
    "EndpointRule",
    "EndpointTable",
    "Refusal",
    "endpoints_from_env",
    "management_rules",
]

"""Settings from the environment (``KEYPLANE_*``) and command-line flags. No file is required."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from keyplane.domain.durations import parse_duration
from keyplane.domain.ipnet import TrustedProxies
from keyplane.domain.policy import Policy
from keyplane.endpoints import EndpointTable, endpoints_from_env

DEFAULT_DATABASE_URL = "sqlite:///./keyplane.db"


def _master_key_file_for(database_url: str) -> Path:
    """On SQLite the master key lives beside the database file; otherwise in the working directory."""
    if database_url.startswith("sqlite:///") and database_url != "sqlite:///:memory:":
        db_path = Path(database_url.removeprefix("sqlite:///"))
        return db_path.with_name(db_path.name + ".master-key")
    return Path("keyplane.master-key")


def _policy_from_env() -> Policy:
    text = os.environ.get("KEYPLANE_POLICY")
    path = os.environ.get("KEYPLANE_POLICY_FILE")
    overrides: dict[str, Any] = {}
    raw: str | None
    if path:
        source, raw = f"KEYPLANE_POLICY_FILE {path}", _read(path, "KEYPLANE_POLICY_FILE")
    else:
        source, raw = "KEYPLANE_POLICY", text
    if raw:
        try:
            overrides = json.loads(raw)
        except ValueError as error:
            raise ValueError(f"{source} is not valid JSON: {error}") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"{source} must be a JSON object")
    return Policy.from_overrides(overrides)


def _read(path: str, setting: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as error:
        raise ValueError(f"{setting}: cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{setting}: {path} is not a text (JSON) file") from None


def _endpoints_from_env(env: Mapping[str, str], policy: Policy) -> EndpointTable:
    """The endpoint table, or a ValueError whose one line names the setting that is wrong."""
    path = env.get("KEYPLANE_ENDPOINTS_FILE")
    setting = f"KEYPLANE_ENDPOINTS_FILE {path}" if path else "KEYPLANE_ENDPOINTS"
    if path:
        _read(path, "KEYPLANE_ENDPOINTS_FILE")  # a missing or unreadable file, named
    try:
        return endpoints_from_env(env, policy)  # its ValueErrors name the setting
    except (TypeError, KeyError, AttributeError) as error:  # a JSON value of an unexpected shape
        raise ValueError(f"{setting}: {error}") from None


MIN_VERIFY_TOKEN = 16


def _verify_token_from_env() -> str | None:
    token = os.environ.get("KEYPLANE_VERIFY_TOKEN", "").strip()
    if not token:
        return None
    if len(token) < MIN_VERIFY_TOKEN or not token.isascii() or not token.isprintable():
        raise ValueError(f"KEYPLANE_VERIFY_TOKEN must be at least {MIN_VERIFY_TOKEN} printable ASCII characters")
    return token


def _flag_from_env(name: str, default: bool = False) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be 1 or 0 (true/false), not {value!r}")


def _count_from_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    return int(value)


def _duration_from_env(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    if seconds <= 0:
        raise ValueError(f"{name} must be longer than 0")
    return seconds


def _console_idle_minutes() -> int:
    minutes = _count_from_env("KEYPLANE_CONSOLE_IDLE_MINUTES", 15)
    if not 1 <= minutes <= 24 * 60:
        raise ValueError("KEYPLANE_CONSOLE_IDLE_MINUTES must be 1 to 1440")
    return minutes


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    master_key: str | None = field(default=None, repr=False)  # a secret: never in a repr
    master_key_file: Path | None = None
    redis_url: str | None = None
    policy: Policy = field(default_factory=Policy)
    # KEYPLANE_TRUSTED_PROXIES: addresses and CIDR ranges whose X-Real-IP / X-Forwarded-For is believed
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    # what each private endpoint needs (KEYPLANE_ENDPOINTS / KEYPLANE_ENDPOINTS_FILE; see endpoints.py)
    endpoints: EndpointTable = field(default_factory=EndpointTable.defaults)
    # when set, /v1/ calls (the gateway's) must carry ``Authorization: Bearer <token>``
    verify_token: str | None = field(default=None, repr=False)  # a secret: never in a repr
    # KEYPLANE_VERIFY_OPEN=1: without a token, /v1/ answers anyone (else it answers 401 to everyone)
    verify_open: bool = False
    # KEYPLANE_METRICS=0: nothing is counted and /metrics answers 404 (keyplane.metrics)
    metrics: bool = True
    # KEYPLANE_METRICS_DIR: where each worker writes its counters for the others' scrapes (serve --workers N)
    metrics_dir: Path | None = None
    # KEYPLANE_LOG_REFUSALS_PER_SECOND: refusal log lines a second per reason (keyplane.logs)
    refusal_lines_per_second: int = 10
    # KEYPLANE_LAST_USED_FLUSH: how often each process writes its keys' last uses (auth/usage.py; e.g. 5s)
    last_used_flush_s: float = 5.0
    # KEYPLANE_EXPIRING_WITHIN: the horizon of /metrics' keys-expiring gauge (e.g. 7d)
    expiring_within_s: float = 7 * 86_400.0
    # KEYPLANE_CONSOLE_IDLE_MINUTES: a console session unused this long is signed out (keyplane.console)
    console_idle_minutes: int = 15
    # KEYPLANE_CONSOLE_SECURE_COOKIE=1: the session cookie is Secure even on plain http (behind a TLS proxy);
    # over https it is Secure anyway
    console_secure_cookie: bool = False

    @property
    def verify_mode(self) -> str:
        """One line for the start-up log: how /v1/ is guarded."""
        if self.verify_token:
            return "/v1/ needs Authorization: Bearer <KEYPLANE_VERIFY_TOKEN>"
        if self.verify_open:
            return (
                "/v1/ is OPEN to anyone who can reach it (KEYPLANE_VERIFY_OPEN=1, no KEYPLANE_VERIFY_TOKEN); "
                "client_ip is taken only from KEYPLANE_TRUSTED_PROXIES"
            )
        return "/v1/ is closed: every call answers 401 (set KEYPLANE_VERIFY_TOKEN, or KEYPLANE_VERIFY_OPEN=1)"

    @property
    def resolved_master_key_file(self) -> Path:
        return self.master_key_file or _master_key_file_for(self.database_url)

    @classmethod
    def from_env(cls, database_url: str | None = None) -> Settings:
        env = os.environ
        key_file = env.get("KEYPLANE_MASTER_KEY_FILE")
        proxies = env.get("KEYPLANE_TRUSTED_PROXIES", "")
        policy = _policy_from_env()
        settings = cls(
            database_url=env.get("KEYPLANE_DATABASE_URL") or DEFAULT_DATABASE_URL,
            master_key=env.get("KEYPLANE_MASTER_KEY") or None,
            master_key_file=Path(key_file) if key_file else None,
            redis_url=env.get("KEYPLANE_REDIS_URL") or None,
            policy=policy,
            trusted_proxies=TrustedProxies.parse(proxies),
            endpoints=_endpoints_from_env(env, policy),
            verify_token=_verify_token_from_env(),
            verify_open=_flag_from_env("KEYPLANE_VERIFY_OPEN"),
            metrics=_flag_from_env("KEYPLANE_METRICS", default=True),
            metrics_dir=Path(env["KEYPLANE_METRICS_DIR"]) if env.get("KEYPLANE_METRICS_DIR") else None,
            refusal_lines_per_second=_count_from_env("KEYPLANE_LOG_REFUSALS_PER_SECOND", 10),
            last_used_flush_s=_duration_from_env("KEYPLANE_LAST_USED_FLUSH", 5.0),
            expiring_within_s=_duration_from_env("KEYPLANE_EXPIRING_WITHIN", 7 * 86_400.0),
            console_idle_minutes=_console_idle_minutes(),
            console_secure_cookie=_flag_from_env("KEYPLANE_CONSOLE_SECURE_COOKIE"),
        )
        return replace(settings, database_url=database_url) if database_url else settings

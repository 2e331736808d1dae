"""Shared by the benchmarks: a store filled with N keys fast (bulk SQL), and requests signed like ccxt's.

Filling the store goes around the service on purpose (one executemany instead of N transactions with
audit events): that is fine for a benchmark and only for a benchmark. The rows are the ones the service
writes (sealed secrets under the store's master key), so verification reads them exactly as in service.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from keyplane.config import Settings  # noqa: E402
from keyplane.domain.model import Scheme  # noqa: E402
from keyplane.runtime import build_runtime, load_master_key  # noqa: E402
from keyplane.store.tables import accounts, api_keys  # noqa: E402

BITGET_PATH = "/api/v2/spot/account/assets"
WHITEBIT_PATH = "/api/v4/trade-account/balance"
BATCH = 20_000


@dataclass(frozen=True, slots=True)
class BenchKey:
    api_key: str
    secret: bytes
    passphrase: str | None


def fill_store(database_url: str, count: int, *, sample: int, seed: int = 7) -> dict[Scheme, list[BenchKey]]:
    """Makes ``count`` keys (half Bitget, half WhiteBIT, each on its own main account, no IP allowlist);
    returns the secrets of ``sample`` of each scheme, drawn at random across the whole store."""
    settings = Settings(database_url=database_url)
    runtime = build_runtime(settings)  # migrates, makes the master key file
    master = load_master_key(settings)
    runtime.close()
    engine = sa.create_engine(database_url)
    rng = random.Random(seed)
    half = count // 2
    keep = {scheme: set(rng.sample(range(half), min(sample, half))) for scheme in Scheme}
    chosen: dict[Scheme, list[BenchKey]] = {Scheme.BITGET: [], Scheme.WHITEBIT: []}
    now = int(time.time() * 1000)
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=OFF")
        first_uid = (conn.execute(sa.select(sa.func.max(accounts.c.uid))).scalar() or 1_000_000_000) + 1
        uid = first_uid
        for scheme in Scheme:
            for start in range(0, half, BATCH):
                account_rows: list[dict[str, Any]] = []
                key_rows: list[dict[str, Any]] = []
                for index in range(start, min(start + BATCH, half)):
                    key_id = str(uuid.uuid4())
                    if scheme is Scheme.BITGET:
                        api_key = "bg_" + os.urandom(16).hex()
                        secret = os.urandom(32).hex()
                    else:
                        api_key = os.urandom(16).hex()
                        secret = os.urandom(16).hex()
                    account_rows.append(
                        {
                            "uid": uid,
                            "public_id": str(uuid.uuid4()),
                            "parent_uid": None,
                            "name": f"bench{uid}",
                            "alias_key": None,
                            "label": "",
                            "email": None,
                            "share_kyc": False,
                            "permissions": [],
                            "status": "normal",
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                    key_rows.append(
                        {
                            "id": key_id,
                            "api_key": api_key,
                            "account_uid": uid,
                            "scheme": scheme.value,
                            "sign_type": "hmac",
                            "sealed_secret": master.seal(secret.encode(), key_id),
                            "public_key": None,
                            "passphrase_hash": None,
                            "label": "",
                            "permissions": ["read", "spot_trade", "contract_trade"] if scheme is Scheme.BITGET else [],
                            "key_type": 2 if scheme is Scheme.WHITEBIT else None,
                            "ip_list": [],
                            "endpoints": [],
                            "enabled": True,
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
                    if index in keep[scheme]:
                        chosen[scheme].append(BenchKey(api_key, secret.encode(), None))
                    uid += 1
                conn.execute(sa.insert(accounts), account_rows)
                conn.execute(sa.insert(api_keys), key_rows)
    engine.dispose()
    return chosen


def bitget_request(key: BenchKey, now_ms: int, client_ip: str = "127.0.0.1") -> dict[str, Any]:
    """A signed GET as ccxt's bitget sends it (sorted query, base64 HMAC-SHA256)."""
    timestamp = str(now_ms)
    query = "coin=USDT"
    message = f"{timestamp}GET{BITGET_PATH}?{query}".encode()
    signature = base64.b64encode(hmac.new(key.secret, message, hashlib.sha256).digest()).decode()
    headers = {
        "access-key": key.api_key,
        "access-sign": signature,
        "access-timestamp": timestamp,
        "access-passphrase": "",
        "x-channel-api-code": "p4sve",
    }
    return {
        "method": "GET",
        "path": BITGET_PATH,
        "query": query,
        "headers": headers,
        "body": b"",
        "client_ip": client_ip,
    }


def whitebit_request(key: BenchKey, nonce: int, client_ip: str = "127.0.0.1") -> dict[str, Any]:
    """A signed POST as ccxt's whitebit sends it (compact JSON, base64 payload, hex HMAC-SHA512)."""
    body = json.dumps(
        {"request": WHITEBIT_PATH, "nonce": str(nonce), "nonceWindow": False}, separators=(",", ":")
    ).encode()
    payload = base64.b64encode(body).decode()
    signature = hmac.new(key.secret, payload.encode(), hashlib.sha512).hexdigest()
    headers = {
        "content-type": "application/json",
        "x-txc-apikey": key.api_key,
        "x-txc-payload": payload,
        "x-txc-signature": signature,
    }
    return {
        "method": "POST",
        "path": WHITEBIT_PATH,
        "query": "",
        "headers": headers,
        "body": body,
        "client_ip": client_ip,
    }


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cores": os.cpu_count(), "load1": round(load[0], 2), "python": sys.version.split()[0], "commit": _commit()}


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@contextmanager
def one_core() -> Iterator[None]:
    """In-process figures are per core: keep this process on one CPU meanwhile (not its children later)."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {sorted(cpus)[-1]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)

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
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from argon2 import PasswordHasher  # noqa: E402

from keyplane.config import Settings  # noqa: E402
from keyplane.domain.model import Scheme  # noqa: E402
from keyplane.runtime import build_runtime, load_master_key  # noqa: E402

BITGET_PATH = "/api/v2/spot/account/assets"
WHITEBIT_PATH = "/api/v4/trade-account/balance"
BATCH = 20_000
PASSPHRASE = "benchpass1"


@dataclass(frozen=True, slots=True)
class BenchKey:
    api_key: str
    secret: bytes
    passphrase: str | None


def fill_store(database_url: str, count: int, *, sample: int, seed: int = 7) -> dict[Scheme, list[BenchKey]]:
    """Makes ``count`` keys (half Bitget, half WhiteBIT, each on its own main account, no IP allowlist);
    returns the secrets of ``sample`` of each scheme, drawn at random across the whole store.

    A store already filled for the same ``count`` and ``sample`` (its ``.bench.json`` beside it) is reused,
    so ``scale.py`` fills a million keys once for both of its runs.
    """
    assert database_url.startswith("sqlite:///"), "the benchmarks fill a SQLite store"
    db_path = Path(database_url.removeprefix("sqlite:///"))
    marker = db_path.with_name(db_path.name + ".bench.json")
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved["count"] == count and saved["sample"] == sample:
            return {
                Scheme(name): [BenchKey(k, bytes.fromhex(sec), None) for k, sec in keys]
                for name, keys in saved["keys"].items()
            }
    settings = Settings(database_url=database_url)
    runtime = build_runtime(settings)  # migrates, makes the master key file
    master = load_master_key(settings)
    runtime.close()
    rng = random.Random(seed)
    half = count // 2
    keep = {scheme: set(rng.sample(range(half), min(sample, half))) for scheme in Scheme}
    chosen: dict[Scheme, list[BenchKey]] = {Scheme.BITGET: [], Scheme.WHITEBIT: []}
    now = int(time.time() * 1000)
    account_sql = (
        "INSERT INTO accounts (uid, public_id, parent_uid, name, alias_key, label, email, share_kyc, permissions,"
        " status, created_at, updated_at) VALUES (?, ?, NULL, ?, NULL, '', NULL, 0, '[]', 'normal', ?, ?)"
    )
    key_sql = (
        "INSERT INTO api_keys (id, api_key, account_uid, scheme, sign_type, sealed_secret, public_key,"
        " passphrase_hash, label, permissions, key_type, ip_list, endpoints, enabled, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, 'hmac', ?, NULL, ?, '', ?, ?, '[]', '[]', 1, ?, ?)"
    )
    # Bitget keys have a passphrase, checked on every request (a digest after the first slow check).
    # One argon2id hash with tiny parameters serves them all: the first check per key stays fast.
    passphrase_hash = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash(PASSPHRASE)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    uid = (conn.execute("SELECT max(uid) FROM accounts").fetchone()[0] or 1_000_000_000) + 1
    for scheme in Scheme:
        permissions = '["read","spot_trade","contract_trade"]' if scheme is Scheme.BITGET else "[]"
        key_type = 2 if scheme is Scheme.WHITEBIT else None
        for start in range(0, half, BATCH):
            account_rows: list[tuple[Any, ...]] = []
            key_rows: list[tuple[Any, ...]] = []
            for index in range(start, min(start + BATCH, half)):
                key_id = str(uuid.uuid4())
                if scheme is Scheme.BITGET:
                    api_key, secret = "bg_" + os.urandom(16).hex(), os.urandom(32).hex()
                else:
                    api_key, secret = os.urandom(16).hex(), os.urandom(16).hex()
                account_rows.append((uid, str(uuid.uuid4()), f"bench{uid}", now, now))
                sealed = master.seal(secret.encode(), key_id)
                phrase = passphrase_hash if scheme is Scheme.BITGET else None
                key_rows.append((key_id, api_key, uid, scheme.value, sealed, phrase, permissions, key_type, now, now))
                if index in keep[scheme]:
                    chosen[scheme].append(BenchKey(api_key, secret.encode(), None))
                uid += 1
            conn.executemany(account_sql, account_rows)
            conn.executemany(key_sql, key_rows)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    marker.write_text(
        json.dumps(
            {
                "count": count,
                "sample": sample,
                "keys": {s.value: [[k.api_key, k.secret.hex()] for k in keys] for s, keys in chosen.items()},
            }
        )
    )
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
        "access-passphrase": PASSPHRASE,
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

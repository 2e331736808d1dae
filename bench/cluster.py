"""Scaled out, side by side in one run: two ``keyplane serve`` nodes on PostgreSQL + Redis against one on SQLite.

    python bench/cluster.py --keys 1000 --seconds 4 --rounds 3
    python bench/cluster.py --quick          # a smoke test: tiny store, one short round

The store: ``common.fill_store`` fills a SQLite store (``--keys`` keys, half per dialect), and its accounts
and keys are copied into a fresh schema of the ``test`` database (PostgreSQL at 127.0.0.1:5432), so both stores hold
the same rows sealed under the same master key file. Three servers, each one granian worker, the bench
endpoint table (``inprocess.BENCH_ENDPOINTS``: every call counted by the rate limiter, none refused) and a
verify token: ``sqlite`` (no Redis), ``pg1`` and ``pg2`` (PostgreSQL, ``--redis``). Each node is measured
alone, the server on one core and wrk on the other (``--no-pin``: unbound), in ``--rounds`` interleaved
rounds: wrk (1 thread, ``--connections``) at ``/v1/verify`` with Bitget GETs signed by ``--sample`` keys
(each node in turn), then with WhiteBIT POSTs (each node in turn; every body a new monotonic nonce, as
many bodies as a run can send). Figures are medians over rounds: req/s, p50/p99, and the share of answers
that were ``valid`` (wrk counts them). The ratios are each PostgreSQL node's req/s to the SQLite node's,
per dialect (targets: Bitget >= 70%, WhiteBIT >= 40%). PostgreSQL and Redis themselves run unpinned on
the same two cores.

In-process (one core, ``bench/inprocess.py``'s loop): ``Verifier.verify`` on the SQLite store with
``KEYPLANE_REDIS_URL`` set against the same without it, Bitget and WhiteBIT (target: with >= 50% of
without). Propagation: ``bench/propagation.py``'s ``measure`` against pg1 and pg2 (a key change committed
here, then each node asked until it answers by it; p50/p99/max), once publishing on Redis as a node does,
once through the store alone (PostgreSQL's notification and the change cursor); if that script is absent
the output says so. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from common import ROOT, BenchKey, bitget_request, fill_store, machine, one_core, whitebit_request

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_verify import cores, free_port, parse_wrk, pinned, signed_calls
from inprocess import BENCH_ENDPOINTS, rate

import keyplane
from keyplane import SignedRequest
from keyplane.config import Settings
from keyplane.domain.model import Scheme

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
TOKEN = "bench-cluster-" + uuid.uuid4().hex  # /v1/verify needs one (KEYPLANE_VERIFY_TOKEN)
WHITEBIT_PATH = "/api/v4/trade-account/balance"

# wrk: cycles through the bodies, counts the answers that say "valid":true (one wrk thread)
WRK_SCRIPT = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local i = 0
valid = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
    i = i + 1
    return wrk.format(nil, "/v1/verify", nil, bodies[((i - 1) %% #bodies) + 1])
end
response = function(status, headers, body)
    if string.find(body, '"valid":true', 1, true) then valid = valid + 1 end
end
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end
done = function(summary, latency, requests)
    local total = 0
    for _, thread in ipairs(threads) do total = total + thread:get("valid") end
    io.write(string.format("valid answers: %%d\\n", total))
end
"""


# --- the stores --------------------------------------------------------------------------------------------


def make_pg_schema() -> tuple[str, Callable[[], None]]:
    """A fresh schema in the ``test`` database: its URL, and how to drop it."""
    import sqlalchemy as sa

    schema = "kp_cluster_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()

    return f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}", drop


def copy_to_postgres(sqlite_url: str, pg_url: str, master_key_file: Path) -> None:
    """The SQLite store's accounts and keys, row for row, into the (migrated) PostgreSQL store."""
    import sqlalchemy as sa

    from keyplane.store import Store
    from keyplane.store.tables import accounts, api_keys

    source = sa.create_engine(sqlite_url)
    target = Store(pg_url)
    target.migrate()
    with source.connect() as read, target.engine.begin() as write:
        for table in (accounts, api_keys):
            rows = [dict(row._mapping) for row in read.execute(sa.select(table))]
            for start in range(0, len(rows), 5000):
                write.execute(table.insert(), rows[start : start + 5000])
        # the copied UIDs were given explicitly: the identity must continue after them
        write.exec_driver_sql(
            "SELECT setval(pg_get_serial_sequence('accounts', 'uid'), (SELECT max(uid) FROM accounts))"
        )
    source.dispose()
    target.close()


# --- servers -----------------------------------------------------------------------------------------------


def spawn_node(
    name: str, url: str, workdir: Path, env_extra: dict[str, str], cpus: set[int] | None
) -> tuple[subprocess.Popen[bytes], str]:
    """Starts ``keyplane serve`` (one granian worker); ``wait_ready`` waits for it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    env.update(env_extra)
    env["KEYPLANE_ENDPOINTS"] = json.dumps(BENCH_ENDPOINTS)
    env["KEYPLANE_VERIFY_TOKEN"] = TOKEN
    with (workdir / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyplane.cli", "serve", "--port", str(port), "--database", url],
            stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=workdir, preexec_fn=pinned(cpus),
        )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def wait_ready(name: str, process: subprocess.Popen[bytes], base: str, workdir: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"keyplane serve ({name}) exited: " + (workdir / f"{name}.log").read_text()[-3000:])
        time.sleep(0.1)
    raise RuntimeError(f"keyplane serve ({name}) did not start")


# --- requests ----------------------------------------------------------------------------------------------


def whitebit_calls(keys: list[BenchKey], count: int, bodies: Path) -> list[dict[str, Any]]:
    """``count`` WhiteBIT POSTs over ``keys`` in turn, each with the next monotonic nonce of its key (above
    every earlier call's: microseconds now), as the gateway forwards them; written to ``bodies``."""
    base = time.time_ns() // 1000
    calls = []
    for i in range(count):
        key = keys[i % len(keys)]
        body = json.dumps(
            {"request": WHITEBIT_PATH, "nonce": str(base + i // len(keys)), "nonceWindow": False},
            separators=(",", ":"),
        )
        payload = base64.b64encode(body.encode()).decode()
        signature = hmac.new(key.secret, payload.encode(), hashlib.sha512).hexdigest()
        headers = {"content-type": "application/json", "x-txc-apikey": key.api_key, "x-txc-payload": payload,
                   "x-txc-signature": signature}  # fmt: skip
        calls.append({"method": "POST", "uri": WHITEBIT_PATH, "headers": headers, "body": body,
                      "client_ip": "127.0.0.1"})  # fmt: skip
    bodies.write_text("".join(json.dumps(c, separators=(",", ":")) + "\n" for c in calls))
    return calls


def check_valid(base: str, calls: list[dict[str, Any]]) -> None:
    """Every call valid before a run (this also warms each node's cache); spends the calls' nonces."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        for call in calls:
            answer = client.post("/v1/verify", json=call)
            assert answer.json().get("valid") is True, answer.text


def run_wrk(
    wrk: str, base: str, bodies: Path, seconds: float, connections: int, workdir: Path, cpus: set[int] | None
) -> dict[str, Any]:
    script = workdir / "wrk-cluster.lua"
    script.write_text(WRK_SCRIPT % {"bodies": bodies, "token": TOKEN})
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{max(int(seconds), 1)}s", "--latency", "-s", str(script),
         base + "/v1/verify"],
        capture_output=True, text=True, check=True, preexec_fn=pinned(cpus),
    )  # fmt: skip
    figures = parse_wrk(out.stdout)
    requests = int(out.stdout.split(" requests in ")[0].split()[-1])
    valid = int(out.stdout.split("valid answers: ")[1].split()[0])
    figures["valid_share"] = round(valid / requests, 4) if requests else 0.0
    return figures


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": round(statistics.median(r["rps"] for r in runs)),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "valid_share": min(r["valid_share"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "rounds": [r["rps"] for r in runs],
    }


# --- in-process with and without Redis -----------------------------------------------------------------------


def inprocess(url: str, chosen: dict[Scheme, list[BenchKey]], redis_url: str, seconds: float) -> dict[str, Any]:
    """Warm-cache verifications per second on one core, per dialect, without and with Redis (same store)."""
    table = keyplane.EndpointTable.from_overrides(BENCH_ENDPOINTS)
    figures: dict[str, Any] = {}
    with one_core():
        for label, redis in (("without_redis", None), ("with_redis", redis_url)):
            verifier = keyplane.open_verifier(url, endpoints=table, redis_url=redis, follow_changes=False)
            try:
                figures[label] = verify_rates(verifier, chosen, seconds)
            finally:
                verifier.close()
    without, with_ = figures["without_redis"], figures["with_redis"]
    figures["ratio"] = {
        scheme: round(with_[f"{scheme}_per_s"] / without[f"{scheme}_per_s"], 3) for scheme in ("bitget", "whitebit")
    }
    return figures


def verify_rates(verifier: Any, chosen: dict[Scheme, list[BenchKey]], seconds: float) -> dict[str, int]:
    now = int(time.time() * 1000)
    signed = [SignedRequest(**bitget_request(key, now)) for key in chosen[Scheme.BITGET]]
    reasons: dict[str, int] = {}

    def bitget(n: int) -> int:
        for i in range(n):
            reason = verifier.verify(signed[i % len(signed)]).reason
            reasons[reason] = reasons.get(reason, 0) + 1
        return n

    bitget(len(signed))  # warm
    reasons.clear()
    bitget_rate = rate(bitget, seconds)
    assert set(reasons) == {"VALID"}, reasons
    keys = chosen[Scheme.WHITEBIT]
    count = int(max(bitget_rate, 50_000) * seconds) + len(keys)
    base = time.time_ns() // 1000  # microseconds: above the HTTP runs' nonces on this store
    signed_wb = [SignedRequest(**whitebit_request(keys[i % len(keys)], base + i // len(keys))) for i in range(count)]
    position = 0

    def whitebit(n: int) -> int:
        nonlocal position
        end = min(position + n, len(signed_wb))
        for i in range(position, end):
            reason = verifier.verify(signed_wb[i]).reason
            reasons[reason] = reasons.get(reason, 0) + 1
        done, position = end - position, end
        if done == 0:
            raise RuntimeError("ran out of pre-signed WhiteBIT requests")
        return done

    whitebit(len(keys))  # warm
    reasons.clear()
    whitebit_rate = rate(whitebit, seconds)
    assert set(reasons) == {"VALID"}, reasons
    return {"bitget_per_s": round(bitget_rate), "whitebit_per_s": round(whitebit_rate)}


# --- propagation (bench/propagation.py, when it is there) ----------------------------------------------------


def propagation(pg_url: str, nodes: list[str], redis_url: str, key_file: Path, rounds: int) -> dict[str, Any]:
    try:
        import propagation as prop  # type: ignore[import-not-found]
    except ImportError:
        return {"absent": "bench/propagation.py is not in this tree: no propagation figures"}
    from keyplane import crypto

    ring = crypto.MasterKeyRing(None, key_file)
    out: dict[str, Any] = {}
    for label, publish in (("with_redis", redis_url), ("store_only", None)):
        measured = prop.measure(pg_url, nodes, master_key=ring, redis_url=publish, token=TOKEN, rounds=rounds)
        out[label] = measured["all"]
    return out


# --- the run -----------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (bench/README.md)")
    sqlite_url = f"sqlite:///{workdir / 'bench.db'}"
    chosen = fill_store(sqlite_url, args.keys, sample=args.sample)
    key_file = Settings(database_url=sqlite_url).resolved_master_key_file
    pg_url, drop_schema = make_pg_schema()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        copy_to_postgres(sqlite_url, pg_url, key_file)
        server_cpus, wrk_cpus = cores(not args.no_pin)
        common_env = {"KEYPLANE_MASTER_KEY_FILE": str(key_file)}
        nodes: dict[str, str] = {}
        for name, url, extra in (
            ("sqlite", sqlite_url, {}),
            ("pg1", pg_url, {"KEYPLANE_REDIS_URL": args.redis}),
            ("pg2", pg_url, {"KEYPLANE_REDIS_URL": args.redis}),
        ):
            process, base = spawn_node(name, url, workdir, {**common_env, **extra}, server_cpus)
            processes.append(process)
            nodes[name] = base
        for (name, base), process in zip(nodes.items(), processes, strict=True):
            wait_ready(name, process, base, workdir)
        bodies = workdir / "bodies.jsonl"
        wb_count = max(len(chosen[Scheme.WHITEBIT]) * 2, int(args.whitebit_rate * args.seconds))
        for base in nodes.values():  # every key valid and cached on every node before any run
            check_valid(base, signed_calls(chosen[Scheme.BITGET], bodies))
            check_valid(base, whitebit_calls(chosen[Scheme.WHITEBIT], len(chosen[Scheme.WHITEBIT]), bodies))
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"bitget": [], "whitebit": []} for n in nodes}
        for _ in range(args.rounds):  # interleaved: a busy moment of the machine hits every node alike
            # every node's Bitget run first, then every WhiteBIT run: PostgreSQL still writing the last
            # WhiteBIT run's nonces must not weigh on the next node's Bitget figure
            for name, base in nodes.items():
                signed_at = time.time()
                signed_calls(chosen[Scheme.BITGET], bodies)  # Bitget timestamps expire after 30 s
                runs[name]["bitget"].append(
                    run_wrk(wrk, base, bodies, args.seconds, args.connections, workdir, wrk_cpus)
                )
                assert time.time() - signed_at < 30
            for name, base in nodes.items():
                whitebit_calls(chosen[Scheme.WHITEBIT], wb_count, bodies)
                runs[name]["whitebit"].append(
                    run_wrk(wrk, base, bodies, args.seconds, args.connections, workdir, wrk_cpus)
                )
                time.sleep(1.0)  # the node's queued verifications finish before the next node's run
        http = {name: {scheme: median_of(r) for scheme, r in per.items()} for name, per in runs.items()}
        ratios = {
            name: {
                scheme: round(http[name][scheme]["rps"] / http["sqlite"][scheme]["rps"], 3)
                for scheme in ("bitget", "whitebit")
            }
            for name in ("pg1", "pg2")
        }
        prop = propagation(pg_url, [nodes["pg1"], nodes["pg2"]], args.redis, key_file, args.propagation_rounds)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        drop_schema()
    in_process = inprocess(sqlite_url, chosen, args.redis, args.inprocess_seconds)
    return {
        "keys": args.keys,
        "sample_keys": len(chosen[Scheme.BITGET]),
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "server_cpus": sorted(server_cpus) if server_cpus else "any",
        "wrk_cpus": sorted(wrk_cpus) if wrk_cpus else "any",
        "http": http,
        "ratio_to_sqlite": ratios,
        "inprocess": in_process,
        "propagation": prop,
    }


def report(figures: dict[str, Any]) -> None:
    def line(text: str) -> None:
        print(text, file=sys.stderr)

    line(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    for scheme in ("bitget", "whitebit"):
        for name, per in figures["http"].items():
            f = per[scheme]
            tag = "ceiling" if name == "sqlite" else "figure "
            ratio = "" if name == "sqlite" else f"  = {figures['ratio_to_sqlite'][name][scheme]:.0%} of sqlite"
            line(
                f"{tag} {scheme:8s} {name:6s} {f['rps']:>7,} req/s  p50 {f['p50_ms']} ms  p99 {f['p99_ms']} ms"
                f"  valid {f['valid_share']:.1%}{ratio}"
            )
    ip = figures["inprocess"]
    for scheme in ("bitget", "whitebit"):
        line(
            f"in-process {scheme:8s} ceiling (no Redis) {ip['without_redis'][f'{scheme}_per_s']:>9,}/s   with Redis"
            f" {ip['with_redis'][f'{scheme}_per_s']:>9,}/s  = {ip['ratio'][scheme]:.0%}"
        )
    prop = figures["propagation"]
    if "absent" in prop:
        line("propagation: " + prop["absent"])
    for label, f in prop.items():
        if label != "absent":
            line(f"propagation ({label}): p50 {f.get('p50_ms')} ms  p99 {f.get('p99_ms')} ms  max {f.get('max_ms')} ms")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1000, help="keys in the store (half per dialect)")
    parser.add_argument("--sample", type=int, default=500, help="distinct keys signing requests, per dialect")
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--whitebit-rate", type=float, default=15_000, help="WhiteBIT bodies per second of a run")
    parser.add_argument("--inprocess-seconds", type=float, default=2.0)
    parser.add_argument("--propagation-rounds", type=int, default=100)
    parser.add_argument("--no-pin", action="store_true", help="let the scheduler place servers and wrk")
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny sizes, one short round")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.keys, args.sample, args.seconds, args.rounds, args.connections = 40, 10, 1.0, 1, 4
        # enough WhiteBIT calls that a fast node does not wrap around to nonces already spent in its second
        args.whitebit_rate, args.inprocess_seconds, args.propagation_rounds = 20_000, 0.2, 3
    if args.seconds > 12:
        parser.error("--seconds must stay under 12: a round's signed Bitget requests expire after 30 s")
    args.sample = min(args.sample, args.keys // 2)
    with tempfile.TemporaryDirectory(prefix="keyplane-cluster-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        figures = measure(args, workdir)
    out = {"bench": "cluster", **figures, "machine": machine()}
    report(out)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    os.chdir(ROOT)
    main()

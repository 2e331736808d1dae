"""``POST /v1/verify`` over HTTP against ``POST /v1/noop`` of the same server, with wrk on loopback.

    python bench/http_verify.py --keys 1000 --seconds 5 --rounds 3 --connections 64

One ``keyplane serve`` (granian, one worker) over a store of ``--keys`` keys. wrk (Debian's package)
sends Bitget requests signed by ``--sample`` distinct keys, as the nginx gateway would forward them,
from one thread with ``--connections`` connections. The server is bound to one core and wrk to
another (``--no-pin``: wherever the scheduler puts them); unbound, on two cores, the server's I/O
threads and wrk take turns on both, and the ratio moved by ±7% between rounds of the same run.

Ceiling: ``/v1/noop`` on the same server, sent the same bodies, answering a body as large as a verify
answer: the same routing, body read and response write, with no verification. Figures: requests per
second and p50/p99 latency of each; the ratio isolates what verifying costs. ``--rounds`` interleaved
noop/verify pairs (requests signed afresh each round); each figure is the median over the rounds, the
ratio the median of the rounds' ratios. Every verify answer is checked to be ``valid`` before the run.
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from common import ROOT, bitget_request, fill_store, machine

from keyplane.domain.model import Scheme

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inprocess import BENCH_ENDPOINTS

# the gateway's token, as deploy/nginx sends it on every call (a fixed value: the server is private)
VERIFY_TOKEN = "bench-verify-token-0123456789"

WRK_SCRIPT = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
    i = i + 1
    return wrk.format(nil, "%(path)s", nil, bodies[(i %% #bodies) + 1])
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cores(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(the server's cores, wrk's cores): one each when pinning and there are two, else unpinned."""
    available = sorted(os.sched_getaffinity(0))
    if not pin or len(available) < 2:
        return None, None
    return {available[0]}, {available[1]}


def pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that binds the child (and what it starts) to ``cpus``."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def start_server(
    url: str, workdir: Path, cpus: set[int] | None = None, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    env["KEYPLANE_ENDPOINTS"] = json.dumps(BENCH_ENDPOINTS)
    env["KEYPLANE_VERIFY_TOKEN"] = VERIFY_TOKEN  # /v1/ is closed without one
    env.update(extra_env or {})  # --env: e.g. KEYPLANE_METRICS=0, KEYPLANE_LOG_LEVEL=WARNING
    with (workdir / "server.log").open("wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "keyplane.cli", "serve", "--port", str(port), "--database", url],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
            cwd=workdir,
            preexec_fn=pinned(cpus),
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError("keyplane serve exited: " + (workdir / "server.log").read_text())
        time.sleep(0.1)
    raise RuntimeError("keyplane serve did not start")


def parse_wrk(text: str) -> dict[str, Any]:
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    found = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors:(.*)", text)
    return {
        "rps": round(rps),
        "p50_ms": found.get("50"),
        "p99_ms": found.get("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else "",
    }


def run_wrk(
    wrk: str,
    base: str,
    path: str,
    bodies: Path,
    seconds: float,
    connections: int,
    workdir: Path,
    cpus: set[int] | None = None,
) -> dict[str, Any]:
    script = workdir / f"wrk-{path.strip('/').replace('/', '-').replace('?', '-')}.lua"
    script.write_text(WRK_SCRIPT % {"bodies": bodies, "path": path, "token": VERIFY_TOKEN})
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{max(int(seconds), 1)}s", "--latency", "-s", str(script), base + path],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=pinned(cpus),
    )
    return parse_wrk(out.stdout)


def measure(
    keys_total: int,
    sample: int,
    seconds: float,
    connections: int,
    workdir: Path,
    rounds: int = 1,
    pin: bool = True,
    extra_env: dict[str, str] | None = None,
    refused: bool = False,
    versus_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (bench/README.md)")
    url = f"sqlite:///{workdir / 'bench.db'}"
    started = time.perf_counter()
    chosen = fill_store(url, keys_total, sample=sample)
    fill_s = time.perf_counter() - started
    server_cpus, wrk_cpus = cores(pin)
    process, base = start_server(url, workdir, server_cpus, extra_env)
    # --versus: a second server on the same store and core, with other settings, measured in the same rounds
    other: tuple[subprocess.Popen[bytes], str] | None = None
    if versus_env is not None:
        other_dir = workdir / "versus"
        other_dir.mkdir(exist_ok=True)
        other = start_server(url, other_dir, server_cpus, {**(extra_env or {}), **versus_env})
    bodies = workdir / "bodies.jsonl"
    versus: list[dict[str, Any]] = []
    try:
        calls = signed_calls(chosen[Scheme.BITGET], bodies, refused)
        answer_sizes = set()
        for server_base in [base] + ([other[1]] if other else []):
            with httpx.Client(base_url=server_base, headers={"Authorization": f"Bearer {VERIFY_TOKEN}"}) as client:
                for call in calls:  # every call valid (and the cache warm) before the run
                    answer = client.post("/v1/verify", json=call)
                    expected = "BAD_SIGNATURE" if refused else "VALID"
                    assert answer.json()["code"] == expected, answer.text
                    answer_sizes.add(len(answer.content))
        size = round(sum(answer_sizes) / len(answer_sizes))
        request_size = round(bodies.stat().st_size / len(calls))
        noop_path = f"/v1/noop?size={size}"
        run_wrk(wrk, base, noop_path, bodies, 1, connections, workdir, wrk_cpus)  # warm-up
        noops, verifies = [], []
        for _ in range(rounds):  # interleaved, so that a busy moment of the machine hits both alike
            signed_at = time.time()
            signed_calls(chosen[Scheme.BITGET], bodies, refused)  # signed afresh: Bitget's timestamps expire after 30 s
            noops.append(run_wrk(wrk, base, noop_path, bodies, seconds, connections, workdir, wrk_cpus))
            verifies.append(run_wrk(wrk, base, "/v1/verify", bodies, seconds, connections, workdir, wrk_cpus))
            if other is not None:
                versus.append(run_wrk(wrk, other[1], "/v1/verify", bodies, seconds, connections, workdir, wrk_cpus))
            assert time.time() - signed_at < 30, "a round outlived Bitget's 30 s window: lower --seconds"
    finally:
        for proc in [process] + ([other[0]] if other else []):
            proc.terminate()
            proc.wait(timeout=10)
    compared: dict[str, Any] = {}
    if versus:
        compared = {
            "versus_env": versus_env,
            "versus": median_run(versus),
            "ratio_to_versus": round(
                statistics.median(v["rps"] / o["rps"] for v, o in zip(verifies, versus, strict=True)), 3
            ),
            "ratio_to_versus_per_round": [round(v["rps"] / o["rps"], 3) for v, o in zip(verifies, versus, strict=True)],
        }
    return {
        "keys": keys_total,
        "sample_keys": len(calls),
        "fill_s": round(fill_s, 1),
        "connections": connections,
        "server_env": extra_env or {},
        "refused": refused,
        "request_bytes": request_size,
        "answer_bytes": size,
        "rounds": rounds,
        "server_cpus": sorted(server_cpus) if server_cpus else "any",
        "wrk_cpus": sorted(wrk_cpus) if wrk_cpus else "any",
        "noop": median_run(noops),
        "verify": median_run(verifies),
        "ratio_to_noop": round(statistics.median(v["rps"] / n["rps"] for n, v in zip(noops, verifies, strict=True)), 3),
        "ratio_per_round": [round(v["rps"] / n["rps"], 3) for n, v in zip(noops, verifies, strict=True)],
        **compared,
    }


def signed_calls(keys: list[Any], bodies: Path, refused: bool = False) -> list[dict[str, Any]]:
    """Each key's Bitget GET, signed now, as the gateway forwards it; written to ``bodies`` for wrk.
    ``refused``: every signature spoiled (same length), so every call is a BAD_SIGNATURE refusal."""
    now = int(time.time() * 1000)
    calls = []
    for key in keys:
        r = bitget_request(key, now)
        if refused:
            sign = r["headers"]["access-sign"]
            r["headers"]["access-sign"] = ("B" if sign[0] == "A" else "A") + sign[1:]
        calls.append(
            {
                "method": r["method"],
                "uri": f"{r['path']}?{r['query']}",
                "headers": r["headers"],
                "body": "",
                "client_ip": r["client_ip"],
            }
        )
    bodies.write_text("".join(json.dumps(c, separators=(",", ":")) + "\n" for c in calls))
    return calls


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (rounds are interleaved noop/verify pairs)."""
    return {
        "rps": round(statistics.median(r["rps"] for r in runs)),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": "; ".join(r["socket_errors"] for r in runs if r["socket_errors"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1000, help="keys in the store (half per dialect)")
    parser.add_argument("--sample", type=int, default=500, help="distinct Bitget keys signing the requests")
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved noop/verify pairs; figures are medians")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--no-pin", action="store_true", help="let the scheduler place the server and wrk (default: a core each)"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE",
        help="a setting for the server, e.g. KEYPLANE_METRICS=0 (metrics off) or KEYPLANE_LOG_LEVEL=WARNING",
    )
    parser.add_argument(
        "--refused", action="store_true", help="a flood of refusals: every signature spoiled (BAD_SIGNATURE)"
    )
    parser.add_argument(
        "--versus", action="append", default=None, metavar="NAME=VALUE",
        help="also measure a second server with these settings, in the same rounds (e.g. KEYPLANE_METRICS=0)",
    )
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    versus_env = dict(item.split("=", 1) for item in args.versus) if args.versus else None
    with tempfile.TemporaryDirectory(prefix="keyplane-http-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.seconds > 12:
            parser.error("--seconds must stay under 12: a round's signed requests expire after 30 s")
        figures = measure(
            args.keys,
            min(args.sample, args.keys // 2),
            args.seconds,
            args.connections,
            workdir,
            args.rounds,
            pin=not args.no_pin,
            extra_env=extra_env,
            refused=args.refused,
            versus_env=versus_env,
        )
    noop, verify = figures["noop"], figures["verify"]
    print(
        f"ceiling  POST /v1/noop   {noop['rps']:>7,} req/s  p50 {noop['p50_ms']} ms  p99 {noop['p99_ms']} ms",
        file=sys.stderr,
    )
    print(
        f"figure   POST /v1/verify {verify['rps']:>7,} req/s  p50 {verify['p50_ms']} ms  p99 {verify['p99_ms']} ms"
        f"  = {figures['ratio_to_noop']:.0%} of the ceiling",
        file=sys.stderr,
    )
    if "versus" in figures:
        other = figures["versus"]
        print(
            f"versus   POST /v1/verify {other['rps']:>7,} req/s  p50 {other['p50_ms']} ms  p99 {other['p99_ms']} ms"
            f"  with {figures['versus_env']}: this server = {figures['ratio_to_versus']:.0%} of it",
            file=sys.stderr,
        )
    out = {"bench": "http_verify", **figures, "machine": machine()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    os.chdir(ROOT)
    main()

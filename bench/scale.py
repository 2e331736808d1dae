"""The in-process and HTTP figures with 1,000 and with 1,000,000 keys in the store.

    python bench/scale.py --small 1000 --large 1000000 --seconds 3 --http-seconds 8

Runs ``inprocess.py`` and ``http_verify.py`` once over a store of ``--small`` keys (the ceiling) and once
over ``--large`` keys, with the same number of distinct keys signing requests (``--sample``) drawn from
the whole store, and reports each large figure as a share of the small one (target: at least 95%).
The large store is filled with bulk SQL (about a minute for a million keys). The last line is one JSON
object with every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import http_verify
import inprocess
from common import machine


def run(keys: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True)  # one store for both runs: filled once (common.fill_store)
    # Filled by another process: a million rows made and freed in this one left its heap slower for
    # everything after, the bare check included (-28% measured), which is no property of the store.
    url = f"sqlite:///{workdir / 'bench.db'}"
    fill = f"from common import fill_store; fill_store({url!r}, {keys}, sample={min(args.sample, keys // 2)})"
    subprocess.run([sys.executable, "-c", fill], check=True, cwd=Path(__file__).resolve().parent)
    figures: dict[str, Any] = {"inprocess": inprocess.measure(keys, args.sample, args.seconds, workdir)}
    if not args.no_http:
        figures["http"] = http_verify.measure(keys, args.sample, args.http_seconds, args.connections, workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--http-seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-http", action="store_true", help="in-process figures only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keyplane-scale-") as tmp:
        small = run(args.small, args, Path(tmp) / "small")
        large = run(args.large, args, Path(tmp) / "large")
    pairs: dict[str, tuple[float, float]] = {
        f"inprocess_{scheme}": (small["inprocess"][scheme]["verify_per_s"], large["inprocess"][scheme]["verify_per_s"])
        for scheme in ("bitget", "whitebit")
    }
    pairs["inprocess_bitget_miss"] = (
        small["inprocess"]["bitget"]["miss_per_s"],
        large["inprocess"]["bitget"]["miss_per_s"],
    )
    if not args.no_http:
        pairs["http_rps"] = (small["http"]["verify"]["rps"], large["http"]["verify"]["rps"])
    shares = {name: round(big / base, 3) for name, (base, big) in pairs.items()}
    for name, (base, big) in pairs.items():
        print(
            f"{name:22s} ceiling ({args.small:,} keys) {base:>9,.0f}/s   figure ({args.large:,} keys) "
            f"{big:>9,.0f}/s = {shares[name]:.0%}",
            file=sys.stderr,
        )
    out = {"bench": "scale", "small": small, "large": large, "large_share_of_small": shares, "machine": machine()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

"""The in-process and HTTP figures with 1,000 and with 1,000,000 keys in the store.

    python bench/scale.py --small 1000 --large 1000000 --seconds 3 --http-seconds 4 --rounds 3

Fills a store of ``--small`` keys (the ceiling) and one of ``--large`` keys, then measures ``inprocess.py``
and ``http_verify.py`` on each, ``--rounds`` times, alternating which store goes first, with the same
number of distinct keys signing requests (``--sample``) drawn from the whole store. Each figure is the
median over the rounds, and each large figure is reported as a share of the small one (target: at least
95%). Alternating rounds matter on a shared 2-core machine: one busy moment would otherwise land on one
store only. Besides the raw rates it reports the shares of the *normalised* figures (verification as a
share of the same run's bare check, HTTP verify as a share of the same run's no-op), which cancel what
the machine did meanwhile. The large store is filled with bulk SQL by a child process (about a minute for
a million keys). The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import http_verify
import inprocess
from common import machine

# (name, path into one run's figures); each is compared large vs small by its median over the rounds
FIGURES: list[tuple[str, tuple[str, ...]]] = [
    ("inprocess_bitget", ("inprocess", "bitget", "verify_per_s")),
    ("inprocess_whitebit", ("inprocess", "whitebit", "verify_per_s")),
    ("inprocess_bitget_miss", ("inprocess", "bitget", "miss_per_s")),
    ("inprocess_bitget_of_bare", ("inprocess", "bitget", "ratio_to_bare")),
    ("inprocess_whitebit_of_bare", ("inprocess", "whitebit", "ratio_to_bare")),
    ("http_rps", ("http", "verify", "rps")),
    ("http_of_noop", ("http", "ratio_to_noop")),
]


def fill(keys: int, args: argparse.Namespace, workdir: Path) -> None:
    """Filled by another process: a million rows made and freed in this one left its heap slower for
    everything after, the bare check included (-28% measured), which is no property of the store."""
    workdir.mkdir(parents=True)  # one store for every run: filled once (common.fill_store reuses it)
    url = f"sqlite:///{workdir / 'bench.db'}"
    code = f"from common import fill_store; fill_store({url!r}, {keys}, sample={min(args.sample, keys // 2)})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent)


def run(keys: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sample = min(args.sample, keys // 2)
    figures: dict[str, Any] = {"inprocess": inprocess.measure(keys, sample, args.seconds, workdir)}
    if not args.no_http:
        figures["http"] = http_verify.measure(keys, sample, args.http_seconds, args.connections, workdir)
    return figures


def pick(figures: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = figures
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--http-seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each store, alternating")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-http", action="store_true", help="in-process figures only")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
    with tempfile.TemporaryDirectory(prefix="keyplane-scale-") as tmp:
        sizes = {"small": args.small, "large": args.large}
        for name, keys in sizes.items():
            fill(keys, args, Path(tmp) / name)
        for round_ in range(args.rounds):
            order = ("small", "large") if round_ % 2 == 0 else ("large", "small")
            for name in order:
                runs[name].append(run(sizes[name], args, Path(tmp) / name))
    medians: dict[str, dict[str, float]] = {"small": {}, "large": {}}
    for name, path in FIGURES:
        for size in ("small", "large"):
            values = [v for v in (pick(r, path) for r in runs[size]) if v is not None]
            if values:
                medians[size][name] = statistics.median(values)
    shares = {
        name: round(medians["large"][name] / medians["small"][name], 3)
        for name, _ in FIGURES
        if name in medians["small"] and medians["small"][name]
    }
    for name in shares:
        base, big = medians["small"][name], medians["large"][name]
        unit = "" if "_of_" in name else "/s"
        fmt = "{:>9.3f}" if "_of_" in name else "{:>9,.0f}"
        print(
            f"{name:27s} ceiling ({args.small:,} keys) {fmt.format(base)}{unit:2s}  figure ({args.large:,} keys) "
            f"{fmt.format(big)}{unit:2s} = {shares[name]:.0%}",
            file=sys.stderr,
        )
    out = {
        "bench": "scale",
        "rounds": args.rounds,
        "medians": medians,
        "large_share_of_small": shares,
        "runs": runs,
        "machine": machine(),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

"""The benchmarks stay runnable: each runs with tiny sizes and ends with one JSON line of its figures.

These check that the scripts work, not the figures (bench/README.md has those and how to get them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_bench(script: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BENCH,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict)
    assert "ceiling" in out.stderr  # each prints the ceiling it compares with
    return figures


def test_inprocess_bench_runs() -> None:
    figures = run_bench("inprocess.py", "--keys", "40", "--sample", "10", "--seconds", "0.2")
    assert figures["bench"] == "inprocess"
    for scheme in ("bitget", "whitebit"):
        assert figures[scheme]["verify_per_s"] > 0 and figures[scheme]["bare_per_s"] > 0
    assert figures["whitebit"]["nonce_write_per_s"] > 0
    assert figures["bitget_post"]["verify_per_s"] > 0 and figures["bitget_post"]["ratio_to_get"] > 0


def test_cache_memory_bench_runs() -> None:
    figures = run_bench("cache_memory.py", "--keys", "40")
    assert figures["cached"] == 40 and figures["bytes_per_key_python_heap"] > 0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install -y wrk)")
def test_http_bench_runs() -> None:
    figures = run_bench(
        "http_verify.py", "--keys", "40", "--sample", "10", "--seconds", "1", "--rounds", "2", "--connections", "8"
    )
    assert figures["noop"]["rps"] > 0 and figures["verify"]["rps"] > 0
    assert figures["verify"]["non_2xx"] == 0 and figures["noop"]["non_2xx"] == 0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install -y wrk)")
def test_scale_bench_runs() -> None:
    figures = run_bench(
        "scale.py",
        "--small",
        "20",
        "--large",
        "60",
        "--sample",
        "5",
        "--seconds",
        "0.2",
        "--http-seconds",
        "1",
        "--rounds",
        "2",
        "--connections",
        "4",
        timeout=300,
    )
    assert set(figures["large_share_of_small"]) >= {
        "inprocess_bitget",
        "inprocess_whitebit",
        "http_rps",
        "http_of_noop",
    }
    assert len(figures["runs"]["small"]) == len(figures["runs"]["large"]) == 2


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install -y wrk)")
def test_cluster_bench_runs() -> None:
    figures = run_bench("cluster.py", "--quick", timeout=300)
    assert set(figures["http"]) == {"sqlite", "pg1", "pg2"}
    for node in figures["http"].values():
        for scheme in ("bitget", "whitebit"):
            assert node[scheme]["rps"] > 0 and node[scheme]["non_2xx"] == 0
        # Bitget GETs are all valid; a WhiteBIT key's monotonic nonces sent on 32 connections at once may
        # arrive out of order (refused as too low), so the quick run only checks that most verify
        assert node["bitget"]["valid_share"] > 0.99 and node["whitebit"]["valid_share"] > 0.5
    assert set(figures["ratio_to_sqlite"]["pg1"]) == {"bitget", "whitebit"}
    assert figures["inprocess"]["ratio"]["bitget"] > 0
    assert "absent" in figures["propagation"] or figures["propagation"]["with_redis"]["n"] > 0

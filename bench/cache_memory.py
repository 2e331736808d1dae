"""Memory per cached key: what the in-process key cache holds for each key, measured with tracemalloc.

    python bench/cache_memory.py --keys 20000

Loads ``--keys`` keys (half Bitget, half WhiteBIT, HMAC, no IP allowlist) into a verifier's cache, each by
one verification (a cache miss: the store's indexed lookup, unsealing, the prepared HMAC), and divides
the Python heap's growth by the number of entries. Ceiling for comparison: the same keys' raw material
alone (API key string + secret bytes), i.e. what a bare dict of secrets would cost. OpenSSL's HMAC state
lives outside Python's heap; it is measured separately from the process's RSS growth.
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import hmac
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from common import bitget_request, fill_store, machine, whitebit_request

import keyplane
from keyplane import SignedRequest
from keyplane.domain.model import Scheme


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * (resource.getpagesize() // 1024)


def openssl_hmac_bytes(count: int = 50_000) -> int:
    """RSS per prepared HMAC state (outside Python's heap), averaged over both schemes' key sizes."""
    before = rss_kib()
    states = [
        hmac.new(os.urandom(32), digestmod=hashlib.sha256)
        if i % 2
        else hmac.new(os.urandom(16), digestmod=hashlib.sha512)
        for i in range(count)
    ]
    grown = (rss_kib() - before) * 1024
    del states
    return round(grown / count)


def measure(keys_total: int, workdir: Path) -> dict[str, Any]:
    url = f"sqlite:///{workdir / 'bench.db'}"
    chosen = fill_store(url, keys_total, sample=keys_total // 2)
    now = int(time.time() * 1000)
    requests = [SignedRequest(**bitget_request(k, now)) for k in chosen[Scheme.BITGET]]
    requests += [SignedRequest(**whitebit_request(k, now)) for k in chosen[Scheme.WHITEBIT]]
    raw = {k.api_key: k.secret for keys in chosen.values() for k in keys}
    with keyplane.open_verifier(url, follow_changes=False) as verifier:
        verifier.verify(requests[0])  # the first call builds the store's statements; not per key
        verifier.verify(requests[-1])
        verifier.cache.clear()
        gc.collect()
        tracemalloc.start()
        rss_before = rss_kib()
        before = tracemalloc.take_snapshot()
        for request in requests:
            verifier.verify(request)
        gc.collect()
        after = tracemalloc.take_snapshot()
        rss_after = rss_kib()
        entries = len(verifier.cache)
        cache_stats = after.compare_to(before, "filename")
        grown = sum(stat.size_diff for stat in cache_stats)
        top = [(str(stat.traceback), stat.size_diff) for stat in cache_stats[:6]]
        tracemalloc.stop()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    copy = {k.encode().decode(): bytes(bytearray(v)) for k, v in raw.items()}  # fresh objects
    raw_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del copy
    return {
        "keys": keys_total,
        "cached": entries,
        "bytes_per_key_openssl_hmac": openssl_hmac_bytes(),
        "bytes_per_key_python_heap": round(grown / max(entries, 1)),
        "bytes_per_key_rss": round((rss_after - rss_before) * 1024 / max(entries, 1)),
        "bytes_per_key_bare_dict": round(raw_bytes / max(len(raw), 1)),
        "top_files": top,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keyplane-mem-") as tmp:
        figures = measure(args.keys, Path(tmp))
    print(f"ceiling  bare dict api_key -> secret: {figures['bytes_per_key_bare_dict']:,} B/key", file=sys.stderr)
    print(
        f"figure   key cache: {figures['bytes_per_key_python_heap']:,} B/key on the Python heap "
        f"(tracemalloc), {figures['bytes_per_key_rss']:,} B/key of RSS",
        file=sys.stderr,
    )
    out = {"bench": "cache_memory", **figures, "machine": machine()}
    print(
        f"         plus OpenSSL's HMAC state, outside that heap: {figures['bytes_per_key_openssl_hmac']:,} B/key",
        file=sys.stderr,
    )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

"""In-process verifications per second on one core, per dialect, against the bare signature check.

    python bench/inprocess.py --keys 1000 --seconds 3

Ceiling: the bare check of the same requests in a tight loop (prehash, HMAC, encoding, constant-time
compare; WhiteBIT also decodes the payload and compares it with the body), with the secret already at
hand: no header parsing, no lookup, no state. Figure: ``Verifier.verify(request)`` on the same requests
with a warm cache (no ``Requirement``: the endpoint table decides; rate limit counted on every call),
and on a cold cache (``miss``: every call is the store's indexed lookup plus unsealing). Bitget ``POST``:
a replay-protected order, each one new (signed ahead), so every call also records it in the store (the
replay ledger on SQLite) before it is accepted; its figure is compared with the ``GET`` figure measured
in the same alternating slices (``ROUNDS`` of each), so a load that changes during the run weighs on both
alike (``ratio_to_get_phase``: against the GET phase measured before, as earlier versions did). The
pre-signed orders are frozen out of the garbage collector's sight (``gc.freeze()``): a full collection over
them took a second or more and landed in whichever slice ran then.
The last line is one JSON object with every figure.

``--last-used``: instead, the cost of recording each key's last use (auth/usage.py): the warm Bitget ``GET``
figure with the recording on and off, in ``ROUNDS`` alternating slices of each, the flush thread writing
every ``--last-used-flush`` (default 1 s, five times as often as a server does by default: a bound on
its cost). Bitget ``GET`` is the cheapest verification, so the recording weighs most there.

    python bench/inprocess.py --last-used --seconds 12
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import hmac
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    BITGET_PATH,
    PASSPHRASE,
    WHITEBIT_PATH,
    BenchKey,
    bitget_request,
    fill_store,
    machine,
    one_core,
)

import keyplane
from keyplane import SignedRequest
from keyplane.domain.model import Scheme

BITGET_POST_PATH = "/api/v2/spot/trade/place-order"

# The default table's per-account limits (10/s) would refuse most of a benchmark's calls; the limiter
# still counts every call, with limits no benchmark reaches.
BENCH_ENDPOINTS = {
    "rules": [
        {
            "path": BITGET_PATH,
            "method": "GET",
            "permission": "read",
            "rate_limit": "1000000000/minute",
            "rate_name": "bench",
        },
        {
            "path": BITGET_POST_PATH,
            "method": "POST",
            "permission": "spot_trade",
            "rate_limit": "1000000000/minute",
            "rate_name": "bench",
        },
        {
            "path": WHITEBIT_PATH,
            "method": "POST",
            "key_type": 1,
            "rate_limit": "1000000000/minute",
            "rate_name": "bench",
        },
    ]
}


def bitget_post(key: BenchKey, now_ms: int, order: int) -> dict[str, Any]:
    """A signed order as ccxt's bitget sends it (compact JSON body); ``order`` makes each one new."""
    timestamp = str(now_ms)
    body = json.dumps(
        {"symbol": "BTCUSDT", "side": "buy", "orderType": "limit", "force": "gtc", "price": "60000", "size": "0.001",
         "clientOid": f"bench-{order}"},
        separators=(",", ":"),
    ).encode()
    message = f"{timestamp}POST{BITGET_POST_PATH}".encode() + body
    signature = base64.b64encode(hmac.new(key.secret, message, hashlib.sha256).digest()).decode()
    headers = {
        "access-key": key.api_key,
        "access-sign": signature,
        "access-timestamp": timestamp,
        "access-passphrase": PASSPHRASE,
        "content-type": "application/json",
        "x-channel-api-code": "p4sve",
    }
    return {"method": "POST", "path": BITGET_POST_PATH, "query": "", "headers": headers, "body": body,
            "client_ip": "127.0.0.1"}


ROUNDS = 6  # the Bitget POST figure and its ratio: GET and POST measured in this many alternating slices


def rate(fn: Callable[[int], int], seconds: float) -> float:
    """Calls ``fn(n)`` (which does n operations) until ``seconds`` pass; operations per second."""
    done, elapsed = run_for(fn, seconds)
    return done / elapsed


def run_for(fn: Callable[[int], int], seconds: float) -> tuple[int, float]:
    """Calls ``fn(n)`` (which does n operations) until ``seconds`` pass: (operations, seconds taken)."""
    done, n = 0, 256
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        done += fn(n)
        now = time.perf_counter()
        if now >= deadline:
            return done, now - started


def bare_bitget(requests: list[dict[str, Any]], secrets: list[bytes]) -> Callable[[int], int]:
    pairs = list(zip(requests, secrets, strict=True))

    def run(n: int) -> int:
        for i in range(n):
            request, secret = pairs[i % len(pairs)]
            headers = request["headers"]
            message = (
                headers["access-timestamp"] + request["method"] + request["path"] + "?" + request["query"]
            ).encode()
            digest = base64.b64encode(hmac.new(secret, message + request["body"], hashlib.sha256).digest())
            assert hmac.compare_digest(digest, headers["access-sign"].encode())
        return n

    return run


def bare_whitebit(requests: list[dict[str, Any]], secrets: list[bytes]) -> Callable[[int], int]:
    pairs = list(zip(requests, secrets, strict=True))

    def run(n: int) -> int:
        for i in range(n):
            request, secret = pairs[i % len(pairs)]
            headers = request["headers"]
            payload = headers["x-txc-payload"]
            digest = hmac.new(secret, payload.encode(), hashlib.sha512).hexdigest().encode()
            assert hmac.compare_digest(digest, headers["x-txc-signature"].encode())
            assert base64.b64decode(payload) == request["body"]
        return n

    return run


def nonce_write_rate(url: str, key_ids: list[str], seconds: float) -> float:
    """The second ceiling of a WhiteBIT verification: recording its nonce in the store, alone, in a loop.

    The same mechanism the verifier uses, without the verifier: ``NonceGuard.accept`` of a new monotonic
    nonce per call, over ``key_ids`` in turn (on SQLite: one record appended to the store's nonce journal
    under its file lock; the journal's compaction into the store's tables included whenever it passes
    its size). The caller passes real keys of the store whose nonces no later verification reads (the
    Bitget sample's): ``scale.py`` measures the same store again, and the WhiteBIT keys' nonces must stay
    below the ones its next requests are signed with."""
    from keyplane.auth.nonces import NonceGuard
    from keyplane.store import Store

    store = Store(url)
    guard = NonceGuard(store)
    now = int(time.time() * 1000)
    nonce = time.time_ns() // 1000  # above any earlier run's: this loop spends under a million nonces a second
    for key_id in key_ids:  # open and replay the journal, load each key's snapshot: not timed
        nonce += 1
        assert guard.accept(key_id, nonce, False, now) is keyplane.Reason.VALID
    count = len(key_ids)
    position = 0

    def run(n: int) -> int:
        nonlocal nonce, position
        accept = guard.accept
        for _ in range(n):
            nonce += 1
            accept(key_ids[position], nonce, False, now)
            position = (position + 1) % count
        return n

    try:
        return rate(run, seconds)
    finally:
        guard.close()
        store.close()


def whitebit_requests(keys: list[BenchKey], count: int) -> list[dict[str, Any]]:
    from common import whitebit_request

    base = int(time.time() * 1000)
    return [whitebit_request(keys[i % len(keys)], base + i // len(keys)) for i in range(count)]


def measure(keys_total: int, sample: int, seconds: float, workdir: Path) -> dict[str, Any]:
    with one_core():
        return _measure(keys_total, sample, seconds, workdir)


def measure_last_used(keys_total: int, sample: int, seconds: float, workdir: Path) -> dict[str, Any]:
    """The warm Bitget GET figure with last-use recording on and off, in alternating slices."""
    with one_core():
        url = f"sqlite:///{workdir / 'bench.db'}"
        chosen = fill_store(url, keys_total, sample=sample)
        table = keyplane.EndpointTable.from_overrides(BENCH_ENDPOINTS)
        verifier = keyplane.open_verifier(url, endpoints=table, follow_changes=False)
        try:
            keys = chosen[Scheme.BITGET]
            signed: list[SignedRequest] = []
            signed_at = 0.0

            def sign_again() -> None:  # Bitget's 30 s timestamp window: signed anew every 20 s, untimed
                nonlocal signed_at
                signed_at = time.time()
                signed[:] = [SignedRequest(**bitget_request(key, int(signed_at * 1000))) for key in keys]

            sign_again()
            results: dict[str, int] = {}

            def verify_bitget(n: int) -> int:
                for i in range(n):
                    reason = verifier.verify(signed[i % len(signed)]).reason
                    results[reason] = results.get(reason, 0) + 1
                return n

            verify_bitget(len(signed))  # warm the cache
            recording = verifier._usage
            assert recording is not None
            flushes_before = _flushed(url)
            on = off = 0
            on_s = off_s = on_cpu = off_cpu = 0.0
            rounds = max(ROUNDS, int(seconds * 2))  # half-second slices: a swinging load weighs on both alike
            pairs: list[float] = []  # each round's ratio (on/off, per CPU second): their median is the figure
            for round_ in range(rounds):
                if time.time() - signed_at > 20:
                    sign_again()
                rates: dict[bool, float] = {}
                # off then on, then on then off: whichever slice comes second in a pair runs a little faster
                # or slower (caches, the scheduler), and alternating the order cancels that out
                for recorded in (False, True) if round_ % 2 == 0 else (True, False):
                    verifier._usage = recording if recorded else None
                    cpu = time.process_time()
                    done, elapsed = run_for(verify_bitget, seconds / rounds / 2)
                    spent = time.process_time() - cpu
                    rates[recorded] = done / spent
                    if recorded:
                        on, on_s, on_cpu = on + done, on_s + elapsed, on_cpu + spent
                    else:
                        off, off_s, off_cpu = off + done, off_s + elapsed, off_cpu + spent
                pairs.append(rates[True] / rates[False])
            verifier._usage = recording
            assert set(results) == {"VALID"}, results
            verifier.usage.flush()
            assert _flushed(url) > flushes_before, "no last use was written"
        finally:
            verifier.close()
    return {
        "keys": keys_total, "sample_keys": sample,
        "last_used": {
            "off_per_s": round(off / off_s), "on_per_s": round(on / on_s),
            "ratio_on_to_off": round((on / on_s) / (off / off_s), 3),
            # per second of the process's CPU time (every thread's, the flush thread's included): what the
            # recording costs whatever share of the core other processes take
            "off_per_cpu_s": round(off / off_cpu), "on_per_cpu_s": round(on / on_cpu),
            "cpu_ratio_on_to_off": round((on / on_cpu) / (off / off_cpu), 3),
            "median_round_ratio": round(statistics.median(pairs), 3),
            "rounds": len(pairs),
            "flush_every_s": verifier.usage.interval,
        },
    }


def _flushed(url: str) -> int:
    """How many keys have a last use in the store."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM key_usage")).scalar_one())
    finally:
        engine.dispose()


def _measure(keys_total: int, sample: int, seconds: float, workdir: Path) -> dict[str, Any]:
    url = f"sqlite:///{workdir / 'bench.db'}"
    started = time.perf_counter()
    chosen = fill_store(url, keys_total, sample=sample)
    fill_s = time.perf_counter() - started
    table = keyplane.EndpointTable.from_overrides(BENCH_ENDPOINTS)
    verifier = keyplane.open_verifier(url, endpoints=table, follow_changes=False)
    figures: dict[str, Any] = {"keys": keys_total, "sample_keys": sample, "fill_s": round(fill_s, 1)}
    try:
        # --- Bitget: no nonce, so the same signed requests can be verified again and again (30 s window)
        keys = chosen[Scheme.BITGET]
        now = int(time.time() * 1000)
        raw = [bitget_request(key, now) for key in keys]
        signed = [SignedRequest(**r) for r in raw]
        bare = rate(bare_bitget(raw, [k.secret for k in keys]), seconds)
        results: dict[str, int] = {}

        def verify_bitget(n: int) -> int:
            for i in range(n):
                reason = verifier.verify(signed[i % len(signed)]).reason
                results[reason] = results.get(reason, 0) + 1
            return n

        verify_bitget(len(signed))  # warm the cache
        results.clear()
        warm = rate(verify_bitget, seconds)
        assert set(results) == {"VALID"}, results

        def miss_bitget(n: int) -> int:
            for i in range(n):
                verifier.cache.clear()
                verifier.verify(signed[i % len(signed)])
            return n

        miss = rate(miss_bitget, min(seconds, 2.0))
        figures["bitget"] = {
            "bare_per_s": round(bare),
            "verify_per_s": round(warm),
            "miss_per_s": round(miss),
            "ratio_to_bare": round(warm / bare, 3),
        }

        # --- Bitget POST: replay-protected, so each order is new, and recorded once before it is accepted
        get_rate = warm
        # POST is the slower path, but its slices may meet a lighter load than the GET phase did
        count = min(int(max(get_rate, 50_000) * seconds * 1.5) + len(keys) + ROUNDS * 1024, 2_000_000)
        # Signed 20 s ahead (inside the 30 s window): on a loaded machine signing them all takes tens of seconds,
        # and they must not expire before the last slice; the GETs are signed again after them for the same reason
        now = int(time.time() * 1000) + 20_000
        posts = [SignedRequest(**bitget_post(keys[i % len(keys)], now, i)) for i in range(count)]
        now = int(time.time() * 1000)
        signed[:] = [SignedRequest(**bitget_request(key, now)) for key in keys]
        # The pre-signed orders are millions of objects no server holds: out of the collector's sight, so a
        # full collection (a second or more over them) does not land in whichever slice happens to run then
        gc.collect()
        gc.freeze()
        position = 0
        results = {}

        def verify_bitget_post(n: int) -> int:
            nonlocal position
            end = min(position + n, len(posts))
            for i in range(position, end):
                reason = verifier.verify(posts[i]).reason
                results[reason] = results.get(reason, 0) + 1
            done = end - position
            position = end
            if done == 0:
                raise RuntimeError("ran out of pre-signed Bitget orders; lower --seconds")
            return done

        verify_bitget_post(len(keys))  # warm the verdicts of the POST rule
        results.clear()
        # GET and POST in alternating slices (ROUNDS of each, seconds / ROUNDS long): on a shared machine the
        # load swings within seconds, and two phases measured one after the other compare two loads
        get_done = post_done = 0
        get_time = post_time = 0.0
        for _ in range(ROUNDS):
            done, elapsed = run_for(verify_bitget, seconds / ROUNDS)
            get_done, get_time = get_done + done, get_time + elapsed
            done, elapsed = run_for(verify_bitget_post, seconds / ROUNDS)
            post_done, post_time = post_done + done, post_time + elapsed
        assert set(results) == {"VALID"}, results
        replayed = verifier.verify(posts[0]).reason
        assert replayed == "REQUEST_REPLAYED", replayed
        post_rate = post_done / post_time
        figures["bitget_post"] = {
            "verify_per_s": round(post_rate),
            "get_per_s_interleaved": round(get_done / get_time),
            "ratio_to_get": round(post_rate / (get_done / get_time), 3),
            "ratio_to_get_phase": round(post_rate / get_rate, 3),
        }
        posts.clear()  # its memory, before the WhiteBIT requests are signed
        gc.unfreeze()

        # --- WhiteBIT: every request carries a new nonce, recorded in the store before it is accepted
        keys = chosen[Scheme.WHITEBIT]
        estimate = int(max(warm, 50_000) * seconds * 1.2) + len(keys)
        raw = whitebit_requests(keys, min(estimate, 2_000_000))
        signed = [SignedRequest(**r) for r in raw]
        bare = rate(bare_whitebit(raw, [keys[i % len(keys)].secret for i in range(len(raw))]), seconds)
        position = 0
        results = {}

        def verify_whitebit(n: int) -> int:
            nonlocal position
            end = min(position + n, len(signed))
            for i in range(position, end):
                reason = verifier.verify(signed[i]).reason
                results[reason] = results.get(reason, 0) + 1
            done = end - position
            position = end
            if done == 0:
                raise RuntimeError("ran out of pre-signed WhiteBIT requests; lower --seconds")
            return done

        verify_whitebit(len(keys))  # warm the cache
        results.clear()
        warm = rate(verify_whitebit, seconds)
        assert set(results) == {"VALID"}, results
        key_ids = []
        for key in chosen[Scheme.BITGET]:  # as many real keys as WhiteBIT signed with (see nonce_write_rate)
            cached = verifier.cache.get(key.api_key)
            assert cached is not None
            key_ids.append(cached.key.id)
        store_write = nonce_write_rate(url, key_ids, seconds)
        figures["whitebit"] = {
            "bare_per_s": round(bare),
            "verify_per_s": round(warm),
            "ratio_to_bare": round(warm / bare, 3),
            "nonce_write_per_s": round(store_write),
            "ratio_to_nonce_write": round(warm / store_write, 3),
        }
    finally:
        verifier.close()
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1000, help="keys in the store (half per dialect)")
    parser.add_argument("--sample", type=int, default=500, help="distinct keys signing requests, per dialect")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument("--workdir", type=Path, default=None, help="where the SQLite store goes (default: tmp)")
    parser.add_argument("--last-used", action="store_true", help="measure last-use recording on against off")
    parser.add_argument("--last-used-flush", default="1s", help="with --last-used: how often it is written")
    args = parser.parse_args(argv)
    if args.last_used:
        os.environ["KEYPLANE_LAST_USED_FLUSH"] = args.last_used_flush
        with tempfile.TemporaryDirectory(prefix="keyplane-bench-") as tmp:
            workdir = args.workdir or Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            figures = measure_last_used(args.keys, min(args.sample, args.keys // 2), args.seconds, workdir)
        used = figures["last_used"]
        print(
            f"bitget   verify (warm), last use recorded: {used['on_per_s']:,}/s   not recorded: "
            f"{used['off_per_s']:,}/s   = {used['ratio_on_to_off']:.1%}; per CPU second "
            f"{used['on_per_cpu_s']:,} / {used['off_per_cpu_s']:,} = {used['cpu_ratio_on_to_off']:.1%}; median of "
            f"{used['rounds']} rounds {used['median_round_ratio']:.1%}",
            file=sys.stderr,
        )
        out = {"bench": "inprocess-last-used", **figures, "machine": machine()}
        print(json.dumps(out))
        return out
    with tempfile.TemporaryDirectory(prefix="keyplane-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        figures = measure(args.keys, min(args.sample, args.keys // 2), args.seconds, workdir)
    for scheme in ("bitget", "whitebit"):
        f = figures[scheme]
        print(
            f"{scheme:8s} ceiling (bare check): {f['bare_per_s']:>9,}/s   verify (warm cache): "
            f"{f['verify_per_s']:>9,}/s   = {f['ratio_to_bare']:.0%} of the ceiling",
            file=sys.stderr,
        )
    post = figures["bitget_post"]
    print(
        f"bitget   POST (replay-protected, recorded once): {post['verify_per_s']:,}/s   = "
        f"{post['ratio_to_get']:.0%} of the GET figure",
        file=sys.stderr,
    )
    wb = figures["whitebit"]
    print(
        f"whitebit ceiling (nonce write to the store alone): {wb['nonce_write_per_s']:,}/s   verify = "
        f"{wb['ratio_to_nonce_write']:.0%} of it",
        file=sys.stderr,
    )
    print(
        f"bitget   cold cache (store lookup + unseal per call): {figures['bitget']['miss_per_s']:,}/s", file=sys.stderr
    )
    out = {"bench": "inprocess", **figures, "machine": machine()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

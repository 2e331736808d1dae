"""``keyplane serve --workers 2``: two processes share one SQLite store and its nonce journal, so a signed
WhiteBIT request replayed at both at once is accepted exactly once, and Bitget's and WhiteBIT's keys work
on whichever worker a connection lands."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ccxt
import httpx
import pytest

from conftest import Server, make_server
from test_native_verify import AUTH, TOKEN, as_verify_call

PARALLEL = 24


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("workers"), {"KEYPLANE_VERIFY_TOKEN": TOKEN})
    srv.serve_args = ("--workers", "2")
    srv.start()
    yield srv
    srv.stop()


def worker_pids(server: Server) -> set[int]:
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return {int(pid) for pid in children}


def post_all(url: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each body on its own connection, all at once."""

    def post(body: dict[str, Any]) -> dict[str, Any]:
        with httpx.Client(timeout=30) as client:
            answer = client.post(url, json=body, headers=AUTH)
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(post, bodies))


def test_two_worker_processes_run(two_workers: Server) -> None:
    assert len(worker_pids(two_workers)) == 2
    assert all(os.path.exists(f"/proc/{pid}") for pid in worker_pids(two_workers))


@pytest.mark.parametrize("window", [False, True])
def test_a_whitebit_request_replayed_at_both_workers_is_accepted_once(two_workers: Server, window: bool) -> None:
    uid = two_workers.main_account(f"replay{int(window)}")
    key = two_workers.whitebit_main_key(uid)
    client = ccxt.whitebit({"apiKey": key["apiKey"], "secret": key["apiSecret"], "options": {"nonceWindow": window}})
    for _ in range(5):
        call = as_verify_call(client.sign("trade-account/balance", ["v4", "private"], "POST", {}))
        answers = post_all(two_workers.base_url + "/v1/verify", [call] * PARALLEL)
        codes = sorted(a["code"] for a in answers)
        assert codes.count("VALID") == 1, codes
        refused = "NONCE_REPLAYED" if window else "NONCE_TOO_LOW"
        assert codes.count(refused) == PARALLEL - 1, codes


def test_fresh_requests_verify_on_whichever_worker_answers(two_workers: Server) -> None:
    uid = two_workers.main_account("fresh")
    bitget_key = two_workers.bitget_main_key(uid)
    bitget = ccxt.bitget(
        {"apiKey": bitget_key["apiKey"], "secret": bitget_key["secretKey"], "password": bitget_key["passphrase"]}
    )
    whitebit_key = two_workers.whitebit_main_key(uid)
    whitebit = ccxt.whitebit({"apiKey": whitebit_key["apiKey"], "secret": whitebit_key["apiSecret"]})
    calls = [as_verify_call(bitget.sign("v2/spot/account/assets", ["private", "spot"], "GET", {})) for _ in range(8)]
    calls += [as_verify_call(whitebit.sign("trade-account/balance", ["v4", "private"], "POST", {}))]
    answers = post_all(two_workers.base_url + "/v1/verify", calls)
    assert [a["code"] for a in answers] == ["VALID"] * len(calls)

"""batch-create-subaccount-and-apikey is all or nothing (our documented choice, see dialects/bitget.py):
an entry that fails refuses the whole batch and leaves no half-made sub-account or key, and parallel
batches can never push a main account past its sub-account limit."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import bitget_helpers as h
from conftest import Server, make_server

# Rate limits are tested in test_bitget_validation.py; here they would only pace the races.
FAST = {"bitget": {"rate_limits": {
    "batch-create-subaccount-and-apikey": "1000/second",
    "create-virtual-subaccount": "1000/second",
    "create-virtual-subaccount-apikey": "1000/second",
    "virtual-subaccount-list": "1000/second",
    "virtual-subaccount-apikey-list": "1000/second",
}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = h.track(make_server(tmp_path_factory.mktemp("bitget-batch"), {"KEYPLANE_POLICY": json.dumps(FAST)}))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def main(server: Server) -> h.MainKey:
    return h.main_key(server)


@pytest.fixture
def raw(server: Server, main: h.MainKey) -> Iterator[h.Raw]:
    client = h.raw_main(server, main)
    yield client
    client.close()


def _rows(server: Server, sql: str, *args: object) -> list[tuple[Any, ...]]:
    path = server.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(sql, args).fetchall()


def assert_nothing_half_made(server: Server, main_uid: str, keyless_ok: frozenset[str] = frozenset()) -> None:
    """Every sub-account of ``main_uid`` made by a batch has its key, and no key lacks its account.

    ``keyless_ok``: names made by create-virtual-subaccount, which makes sub-accounts without keys."""
    orphans = _rows(server, "SELECT count(*) FROM api_keys WHERE account_uid NOT IN (SELECT uid FROM accounts)")
    assert orphans == [(0,)]
    keyless = _rows(server, "SELECT name FROM accounts WHERE parent_uid = ? AND uid NOT IN "
                            "(SELECT account_uid FROM api_keys)", int(main_uid))
    assert {row[0] for row in keyless} <= keyless_ok


def _refused_batch_leaves_nothing(server: Server, raw: h.Raw, main: h.MainKey, entries: list[dict[str, Any]],
                                  code: str, msg: str, keyless_ok: frozenset[str] = frozenset()) -> None:
    before = h.sub_accounts(raw)
    events_before = _rows(server, "SELECT count(*) FROM audit_events")
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", entries), code, msg)
    assert h.sub_accounts(raw) == before
    assert _rows(server, "SELECT count(*) FROM audit_events") == events_before
    names = [e["subAccountName"].lower() for e in entries if isinstance(e.get("subAccountName"), str)]
    taken = _rows(server, f"SELECT alias_key FROM accounts WHERE alias_key IN ({','.join('?' * len(names))})",
                  *names)
    assert {row[0] for row in taken} <= {a["subAccountName"].lower() for a in before} | _elsewhere
    assert_nothing_half_made(server, main.uid, keyless_ok)


_elsewhere: set[str] = set()


@pytest.mark.parametrize(
    ("bad", "code", "msg"),
    [
        ({"passphrase": "short"}, "40070", "passphrase 8-32 characters with letters and numbers"),
        ({"label": "l" * 21}, "40056", "remark must be length of 1 ~ 20"),
        ({"ipList": ["10.0.0.1", "10.0.0.999"]}, "40057",
         'Parameter ipList "10.0.0.999" does not meet specification'),
        ({"ipList": [f"10.1.0.{i}" for i in range(31)]}, "40058", "Parameter ipList Only a maximum of 30 is allowed"),
        ({"permList": ["spot_trade", "withdraw"]}, "40057",
         'Parameter permList "withdraw" does not meet specification'),
        ({"subAccountName": "abc"}, "40055", "subName must be an English letter with a length of 8"),
    ],
)
def test_batch_with_one_bad_entry_creates_nothing(server: Server, raw: h.Raw, main: h.MainKey, bad: dict[str, Any],
                                                  code: str, msg: str) -> None:
    entries = [h.batch_entry() for _ in range(5)]
    entries[3].update(bad)
    _refused_batch_leaves_nothing(server, raw, main, entries, code, msg)
    # every good name of the refused batch is still free
    good = [e for i, e in enumerate(entries) if i != 3]
    assert len(h.assert_ok(raw.post("batch-create-subaccount-and-apikey", good))) == 4
    assert_nothing_half_made(server, main.uid)


def test_batch_with_a_name_taken_elsewhere_creates_nothing(server: Server, raw: h.Raw, main: h.MainKey) -> None:
    other = h.raw_main(server, h.main_key(server))
    try:
        taken = h.new_name()
        h.assert_ok(other.post("create-virtual-subaccount", {"subAccountList": [taken]}))
        _elsewhere.add(taken.lower())
    finally:
        other.close()
    entries = [h.batch_entry(), h.batch_entry(), h.batch_entry(taken.upper())]
    _refused_batch_leaves_nothing(server, raw, main, entries, "40060", "subNames already exists")
    assert len(h.assert_ok(raw.post("batch-create-subaccount-and-apikey", entries[:2]))) == 2


def test_batch_with_the_same_name_twice_creates_nothing(server: Server, raw: h.Raw, main: h.MainKey) -> None:
    name = h.new_name()
    entries = [h.batch_entry(name), h.batch_entry(), h.batch_entry(name.swapcase())]
    _refused_batch_leaves_nothing(server, raw, main, entries, "40071", "subName exist duplication")


def test_batch_that_would_pass_the_limit_creates_nothing(server: Server, raw: h.Raw, main: h.MainKey) -> None:
    names = [h.new_name() for _ in range(17)]
    h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": names}))
    entries = [h.batch_entry() for _ in range(4)]
    _refused_batch_leaves_nothing(server, raw, main, entries, "40032",
                                  "The Max of sub-account created has reached the limit", frozenset(names))
    assert len(h.assert_ok(raw.post("batch-create-subaccount-and-apikey", entries[:3]))) == 3
    assert len(h.sub_accounts(raw)) == 20


@pytest.mark.parametrize("body", [b"not json", b"[]", b"[1,2]", b'"abcdefgh"', b"3",
                                  b'[{"subAccountName":"abcdefgh","passphrase":"abcd1234","label":"l"}, "x"]'])
def test_batch_that_is_not_an_array_of_entries_creates_nothing(raw: h.Raw, body: bytes) -> None:
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", body), "40017", "Parameter verification failed")
    assert h.sub_accounts(raw) == []


# one JSON object is a batch of one (dialects/bitget.py batch_create): an incomplete one is refused by field
@pytest.mark.parametrize(("body", "field"),
                         [(b"{}", "subAccountName"), (b'{"subAccountName":"abcdefgh"}', "passphrase")])
def test_batch_of_one_object_missing_a_field_creates_nothing(raw: h.Raw, body: bytes, field: str) -> None:
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", body), "40019", f"Parameter {field} cannot be empty")
    assert h.sub_accounts(raw) == []


def test_batch_entry_without_a_passphrase_creates_nothing(server: Server, raw: h.Raw, main: h.MainKey) -> None:
    entries = [h.batch_entry(), h.batch_entry()]
    del entries[1]["passphrase"]
    _refused_batch_leaves_nothing(server, raw, main, entries, "40019", "Parameter passphrase cannot be empty")


def test_each_key_of_a_batch_works_and_belongs_to_its_own_sub_account(server: Server, raw: h.Raw) -> None:
    entries = [h.batch_entry(permList=["read"]) for _ in range(5)]
    made = h.assert_ok(raw.post("batch-create-subaccount-and-apikey", entries))
    assert len({m["subAccountUid"] for m in made}) == 5
    for entry, item in zip(entries, made, strict=True):
        assert [k["subAccountApiKey"] for k in h.keys_of(raw, item["subAccountUid"])] == [item["subAccountApiKey"]]
        client = h.Raw(server, item["subAccountApiKey"], item["secretKey"], entry["passphrase"])
        try:
            info = h.assert_ok(client.request("GET", "/api/v2/spot/account/info"))
        finally:
            client.close()
        assert info["userId"] == item["subAccountUid"]
        assert info["authorities"] == ["stor", "smor", "coor", "cpor", "wtor"]  # Bitget's read-only codes


# races --------------------------------------------------------------------------------------------------


def test_parallel_batches_never_push_a_main_account_past_its_limit(server: Server, main: h.MainKey) -> None:
    # several keys of the same main account, each with its own connection, all firing at once
    clients = [h.raw_main(server, main)] + [h.raw_main(server, h.main_key(server, main.uid)) for _ in range(3)]
    batches = [[h.batch_entry() for _ in range(5)] for _ in range(12)]
    start = threading.Barrier(len(batches))

    def fire(index: int) -> tuple[int, Any]:
        start.wait()
        response = clients[index % len(clients)].post("batch-create-subaccount-and-apikey", batches[index])
        return response.status_code, response.json()

    try:
        with ThreadPoolExecutor(len(batches)) as pool:
            results = list(pool.map(fire, range(len(batches))))
        won = [body for status, body in results if status == 200]
        lost = [body for status, body in results if status != 200]
        assert len(won) == 4  # 4 x 5 = 20, the limit
        assert {(b["code"], b["msg"]) for b in lost} == {
            ("40032", "The Max of sub-account created has reached the limit")}
        listed = h.sub_accounts(clients[0])
        assert len(listed) == 20
        assert {a["subAccountUid"] for a in listed} == {m["subAccountUid"] for b in won for m in b["data"]}
        assert_nothing_half_made(server, main.uid)
    finally:
        for client in clients:
            client.close()


def test_parallel_batches_and_creates_together_stay_within_the_limit(server: Server, main: h.MainKey) -> None:
    clients = [h.raw_main(server, main) for _ in range(4)]
    start = threading.Barrier(16)

    def fire(index: int) -> int:
        start.wait()
        client = clients[index % len(clients)]
        if index % 2:
            client.post("batch-create-subaccount-and-apikey", [h.batch_entry() for _ in range(3)])
        else:
            client.post("create-virtual-subaccount", {"subAccountList": [h.new_name() for _ in range(3)]})
        return index

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(fire, range(16)))
        assert len(h.sub_accounts(clients[0])) == 20
        count = _rows(server, "SELECT count(*) FROM accounts WHERE parent_uid = ?", int(main.uid))
        assert count == [(20,)]
    finally:
        for client in clients:
            client.close()


def _race_for(server: Server, contested: str) -> None:
    players = [h.raw_main(server, h.main_key(server)) for _ in range(2)]
    entries = [[h.batch_entry(), h.batch_entry(contested)] for _ in players]
    start = threading.Barrier(2)

    def fire(index: int) -> Any:
        start.wait()
        return players[index].post("batch-create-subaccount-and-apikey", entries[index]).json()

    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(fire, range(2)))
        assert sorted(r["code"] for r in results) == ["00000", "40060"]
        for player, result, mine in zip(players, results, entries, strict=True):
            names = {a["subAccountName"] for a in h.sub_accounts(player)}
            if result["code"] == "00000":
                assert names == {e["subAccountName"] for e in mine}
            else:
                assert names == set()
    finally:
        for player in players:
            player.close()


def test_two_main_accounts_racing_for_one_name_leave_exactly_one_owner(server: Server) -> None:
    for _ in range(3):
        contested = h.new_name()
        _race_for(server, contested)
        owners = _rows(server, "SELECT count(*) FROM accounts WHERE alias_key = ?", contested.lower())
        assert owners == [(1,)]


def test_parallel_key_creation_never_passes_10_keys_per_sub_account(server: Server, main: h.MainKey) -> None:
    clients = [h.raw_main(server, main) for _ in range(4)]
    (made,) = h.assert_ok(clients[0].post("batch-create-subaccount-and-apikey", [h.batch_entry()]))
    uid = made["subAccountUid"]
    start = threading.Barrier(15)

    def fire(index: int) -> str:
        start.wait()
        body = {"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": f"k{index}"}
        return str(clients[index % len(clients)].post("create-virtual-subaccount-apikey", body).json()["code"])

    try:
        with ThreadPoolExecutor(15) as pool:
            codes = list(pool.map(fire, range(15)))
        assert sorted(codes) == ["00000"] * 9 + ["40063"] * 6
        assert len(h.keys_of(clients[0], uid)) == 10
    finally:
        for client in clients:
            client.close()

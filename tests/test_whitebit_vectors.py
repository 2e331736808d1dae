"""Golden vectors for WhiteBIT signing (tests/vectors/whitebit.json, computed with coreutils and openssl,
not with keyplane) checked against keyplane.auth.whitebit, against ccxt's own HMAC, and through the whole
verifier over a real store holding a key with the vector's secret."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import pytest

from keyplane import crypto
from keyplane.auth import Reason, Requirement, SignedRequest, Verifier
from keyplane.auth import whitebit as scheme
from keyplane.domain.model import Scheme, SignType
from keyplane.services import KeyplaneService
from keyplane.store import Store

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "whitebit.json").read_text(encoding="utf-8")
)["vectors"]
CLOCK_MS = 1_763_700_000_000  # the windowed vectors' nonces are within 5 s of this


def ids(vector: dict[str, Any]) -> str:
    return str(vector["name"]).split(" (")[0]


@pytest.mark.parametrize("vector", VECTORS, ids=ids)
def test_signing_matches_the_vector(vector: dict[str, Any]) -> None:
    body = vector["body"].encode()
    checker = scheme.HmacChecker(vector["secret"].encode())
    assert scheme.sign(vector["secret"].encode(), vector["payload"]) == vector["signature"]
    assert checker.matches(vector["payload"].encode(), vector["signature"].encode())
    assert checker.matches(vector["payload"].encode(), vector["signature"].upper().encode())  # hex in any case
    assert not checker.matches(vector["payload"].encode(), vector["signature"][:-1].encode() + b"0")
    assert not scheme.HmacChecker(b"another secret").matches(vector["payload"].encode(), vector["signature"].encode())
    assert scheme.payload_matches_body(vector["payload"], body) is vector["payload_matches_body"]
    if vector["payload_matches_body"]:
        assert scheme.payload_of(body) == vector["payload"]
    assert scheme.is_spaced_json(body) is not vector["compact"]


@pytest.mark.parametrize("vector", VECTORS, ids=ids)
def test_ccxt_signs_the_vector_the_same_way(vector: dict[str, Any]) -> None:
    exchange = ccxt.whitebit()
    signature = exchange.hmac(exchange.encode(vector["payload"]), exchange.encode(vector["secret"]), hashlib.sha512)
    assert signature == vector["signature"]
    if vector["payload_matches_body"]:
        assert exchange.string_to_base64(vector["body"]) == vector["payload"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, crypto.MasterKey, KeyplaneService]]:
    path = tmp_path_factory.mktemp("vectors") / "keyplane.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    master = crypto.MasterKey(bytes(range(32)))
    yield store, master, KeyplaneService(store, master)
    store.close()


@pytest.mark.parametrize("vector", VECTORS, ids=ids)
def test_the_verifier_accepts_exactly_the_compact_matching_vectors(
    vector: dict[str, Any], store: tuple[Store, crypto.MasterKey, KeyplaneService]
) -> None:
    db, master, service = store
    account = service.accounts.create_main_account(f"vectors-{uuid.uuid4().hex[:12]}")  # names are unique
    key_id, api_key = str(uuid.uuid4()), uuid.uuid4().hex
    with db.transaction() as tx:
        tx.insert_api_key(
            key_id=key_id, api_key=api_key, account_uid=account.uid, scheme=Scheme.WHITEBIT,
            sign_type=SignType.HMAC, sealed_secret=master.seal(vector["secret"].encode(), key_id),
            public_key_pem=None, passphrase_hash=None, label="vector", permissions=(), key_type=2, ip_list=(),
        )  # fmt: skip
    verifier = Verifier(db, master, clock_ms=lambda: CLOCK_MS)
    body = vector["body"].encode()
    request = SignedRequest(
        method="POST",
        path=json.loads(body)["request"],
        query="",
        headers={
            "x-txc-apikey": api_key,
            "x-txc-payload": vector["payload"],
            "x-txc-signature": vector["signature"],
        },
        body=body,
        client_ip="127.0.0.1",
    )
    expected = Reason.VALID if vector["compact"] and vector["payload_matches_body"] else Reason.PAYLOAD_MISMATCH
    assert verifier.verify(request, Requirement(), Scheme.WHITEBIT).reason is expected
    if expected is Reason.VALID:  # the same request again is a replay
        assert verifier.verify(request, Requirement(), Scheme.WHITEBIT).reason in (
            Reason.NONCE_TOO_LOW,
            Reason.NONCE_REPLAYED,
        )


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("1763700000000", 1763700000000),
        (1763700000000, 1763700000000),
        ("0", 0),
        (str(2**63 - 1), 2**63 - 1),
        (2**63 - 1, 2**63 - 1),
        (str(2**63), None),  # 19 digits, but past what the store's BIGINT holds
        (2**63, None),
        ("9999999999999999999", None),
        ("12345678901234567890", None),
        (-1, None),
        ("-1", None),
        (True, None),
        ("1.5", None),
        (1.5, None),
        ("١٢٣", None),  # digits int() reads, but not ASCII
        (None, None),
    ],
)
def test_parse_nonce(given: object, parsed: int | None) -> None:
    assert scheme.parse_nonce(given) == parsed

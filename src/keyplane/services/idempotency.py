"""Safe retries of a create: the ``Idempotency-Key`` header of the native management API.

A create that carries a key first takes a claim on (its token, the key) in a transaction of its own:
one row, made by an insert that only one of two racing requests wins, whichever process or node they
reach (the primary key decides; on PostgreSQL the later insert waits for the earlier commit). The winner
runs the create and records its answer on the claim; every later request with the same key and the same
request (method, path and body, compared as canonical JSON) gets that answer back and creates nothing.
The same key with another request is refused (``IdempotencyKeyReused``). A request that finds the claim
still unanswered waits for it (``IdempotencyInProgress`` until the answer is there).

Answers are kept 24 hours. A one-time secret is never recorded: the caller records the answer without it,
saying so in the answer. A claim left without an answer for ``STALE_MS`` (its create failed for an outage
and the claim could not be given back then, or its process died) is taken over by the next request with
that key. The create's commit and the answer's record are two transactions; so that a process killed
between the two cannot leave a claim a retry would run again, the create's own commit also writes a
provisional answer on the claim (``provisional``, through ``store.in_the_same_commit``): a 409
``idempotent_answer_lost`` that says the object was made and its answer is gone. ``finish`` then replaces
it with the real answer; if the process died first, a retry gets the 409 and creates nothing.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from keyplane.errors import IdempotencyInProgress, IdempotencyKeyReused, InvalidInput
from keyplane.store import Store, Transaction
from keyplane.store import tokens as rows
from keyplane.store.store import now_ms

TTL_MS = 24 * 3600 * 1000
STALE_MS = 60_000
KEY_MAX = 255
# What a retry gets when the first request's create committed but its process died before the answer was
# recorded: the native API's error shape, written here because the store layer records bytes.
ANSWER_LOST_STATUS = 409
ANSWER_LOST_BODY = (
    b'{"error":{"code":"idempotent_answer_lost","message":"the first request with this Idempotency-Key made '
    b'its object, but its answer was lost: find the object by listing; nothing was created again"}}'
)


@dataclass(frozen=True, slots=True)
class Claim:
    """This request holds the key: run the create, then ``finish`` (or ``abandon`` after an outage)."""

    token_id: str
    key: str
    owner: str


@dataclass(frozen=True, slots=True)
class Replay:
    """The first request's recorded answer."""

    status: int
    body: bytes


def check_key(key: str) -> str:
    """1 to 255 visible ASCII characters (as Stripe's and the IETF draft's keys are)."""
    if not 1 <= len(key) <= KEY_MAX or not all("!" <= ch <= "~" for ch in key):
        raise InvalidInput(
            f"Idempotency-Key must be 1 to {KEY_MAX} visible ASCII characters", field="Idempotency-Key"
        )
    return key


def request_digest(method: str, path: str, canonical_body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), canonical_body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def begin(self, token_id: str, key: str, request_hash: str) -> Claim | Replay:
        """The claim on ``key``, or the answer recorded for it. ``IdempotencyKeyReused`` if it was used for
        another request, ``IdempotencyInProgress`` while the first request runs."""
        owner = secrets.token_hex(8)
        now = now_ms()
        with self.store.transaction() as tx:
            rows.purge_claims(tx, now - TTL_MS, limit=100)
            if rows.claim(tx, token_id=token_id, key=key, request_hash=request_hash, owner=owner, at=now):
                return Claim(token_id, key, owner)
            row = rows.read_claim(tx, token_id, key, lock=True)
            if row is None:  # purged between the two statements
                raise IdempotencyInProgress("the request with this Idempotency-Key is still running")
            expired = row.created_at < now - TTL_MS
            stale = row.status is None and row.claimed_at < now - STALE_MS
            if expired or (stale and row.request_hash == request_hash):
                rows.take_over(
                    tx, token_id=token_id, key=key, request_hash=request_hash, owner=owner, at=now,
                    was_owner=row.owner,
                )
                return Claim(token_id, key, owner)
            if not secrets.compare_digest(row.request_hash, request_hash):
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used for another request in the last 24 hours: use a new key",
                    field="Idempotency-Key",
                )
            # the provisional answer is the create's own commit, written a moment before the real one: while
            # the claim is fresh its holder is still recording the answer, and only a stale one means it died
            provisional = row.status == ANSWER_LOST_STATUS and bytes(row.body or b"") == ANSWER_LOST_BODY
            if row.status is None or (provisional and row.claimed_at >= now - STALE_MS):
                raise IdempotencyInProgress("the request with this Idempotency-Key is still running")
            return Replay(status=int(row.status), body=bytes(row.body))

    def finish(self, claim: Claim, status: int, body: bytes) -> None:
        """Records the answer (without any one-time secret) for later requests with the same key."""
        with self.store.transaction() as tx:
            rows.finish(tx, token_id=claim.token_id, key=claim.key, owner=claim.owner, status=status, body=body)

    def provisional(self, claim: Claim) -> Callable[[Transaction], None]:
        """The write the create's own commit makes on the claim: "made, answer lost" until ``finish``."""

        def write(tx: Transaction) -> None:
            rows.finish(
                tx, token_id=claim.token_id, key=claim.key, owner=claim.owner, status=ANSWER_LOST_STATUS,
                body=ANSWER_LOST_BODY,
            )

        return write

    def abandon(self, claim: Claim) -> None:
        """Gives the key back after a create that committed nothing (an outage): a retry runs it again."""
        with self.store.transaction() as tx:
            rows.release(tx, token_id=claim.token_id, key=claim.key, owner=claim.owner)


__all__ = ["Claim", "IdempotencyService", "Replay", "check_key", "request_digest"]

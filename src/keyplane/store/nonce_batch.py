"""Group commit of once-only claims on PostgreSQL: the nonces and replay records of concurrent requests,
decided by one conditional statement per batch.

Each request's claim (a WhiteBIT monotonic nonce, a windowed nonce, a Bitget replay token) is queued; a
batch thread takes everything queued, decides it with ONE statement in its own autocommit transaction
(one round trip, one commit for the whole batch), and hands each claim its answer. While batches are on
the wire (up to ``BATCH_THREADS``, each thread with a connection of its own) the next one gathers, so
under load a batch holds many of the requests in flight, and when idle a claim waits for nothing but its
own statement. Concurrent batches of one process are two nodes' batches to each other: the store decides.

The statement (``_BATCH``): two ``INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING`` in data-modifying
CTEs, one per table, the rows given as arrays. Exactness is the single-claim statement's
(``store/nonces.py``): under READ COMMITTED a conflicting row is locked and its ``WHERE`` evaluated against
the newest committed version, a concurrent first insert of the same row is waited for and then taken as
a conflict, so of two nodes claiming the same nonce exactly one gets its row back. Within one batch:

- monotonic nonces of one key (``advance``): the claims that rise above every earlier claim of the batch
  (in arrival order) form a chain ``lo < … < hi``; one row ``hi`` is written when the stored nonce is
  below ``lo``, and then every claim of the chain is accepted (as if applied one after another). A claim
  at or below an earlier one of its batch is refused at once (whatever the store says, the earlier one is
  higher). When the row does not come back (another node moved the key past ``lo``), the rest of the
  chain is decided claim by claim with the single statement: rare, exact;
- windowed nonces and replay tokens (``record``): one row per distinct (key, nonce); a repeat inside the
  batch is refused at once (the first one decides); a row that comes back was recorded by this batch.

Rows are written in key order, so two nodes' batches lock shared rows in one order (no deadlock between
them). A key deleted meanwhile makes the statement fail on its foreign key: the batch is then decided
claim by claim with the single statements, which raise ``KeyGone`` for that key only. Any other failure
(an outage) fails every claim of the batch with the error: the transaction committed nothing, none is
accepted. The batch's connection is kept between batches; when it fails after having worked (the server
restarted meanwhile), the batch is tried once more on a new connection: if the first attempt had
committed after all, the second can only refuse (never accept twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc

ADVANCE = 0
RECORD = 1

# Batches on the wire at once per process. A batch waits mostly for its commit's WAL flush (0.5-6 ms on
# this machine, the longer when other work writes to the disk): while one waits, others go out, and
# PostgreSQL flushes their commits together (bench/README.md has what 1 and 4 measured).
BATCH_THREADS = 4

_BATCH = sa.text(
    "WITH adv_in AS ("
    " SELECT * FROM unnest(CAST(:adv_keys AS varchar[]), CAST(:adv_lo AS bigint[]), CAST(:adv_hi AS bigint[]))"
    " AS c(api_key_id, lo, hi)"
    "), adv AS ("
    " INSERT INTO key_nonces (api_key_id, last_nonce) SELECT api_key_id, hi FROM adv_in ORDER BY api_key_id"
    " ON CONFLICT (api_key_id) DO UPDATE SET last_nonce = excluded.last_nonce"
    " WHERE key_nonces.last_nonce < (SELECT lo FROM adv_in WHERE adv_in.api_key_id = excluded.api_key_id)"
    " RETURNING api_key_id, 0::bigint AS nonce"
    "), rec AS ("
    " INSERT INTO seen_nonces (api_key_id, nonce, expires_at)"
    " SELECT * FROM unnest(CAST(:rec_keys AS varchar[]), CAST(:rec_nonces AS bigint[]),"
    " CAST(:rec_expires AS bigint[])) AS r(api_key_id, nonce, expires_at) ORDER BY api_key_id, nonce"
    " ON CONFLICT (api_key_id, nonce) DO UPDATE SET expires_at = excluded.expires_at"
    " WHERE seen_nonces.expires_at < :now"
    " RETURNING api_key_id, nonce"
    ") SELECT 0, api_key_id, nonce FROM adv UNION ALL SELECT 1, api_key_id, nonce FROM rec"
)


class Claim:
    """One request's claim and, once decided, its outcome (True: accepted) or error. A thread waits on
    ``event``; a coroutine on ``future`` (resolved on its own loop)."""

    __slots__ = ("error", "event", "expires_at", "future", "key_id", "kind", "loop", "nonce", "now_ms", "outcome")

    def __init__(self, kind: int, key_id: str, nonce: int, expires_at: int, now_ms: int) -> None:
        self.kind = kind
        self.key_id = key_id
        self.nonce = nonce
        self.expires_at = expires_at
        self.now_ms = now_ms
        self.outcome = False
        self.error: BaseException | None = None
        self.event: threading.Event | None = None
        self.future: asyncio.Future[bool] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None


# the single-claim statements, for the rare claims a batch cannot decide alone: (key, nonce, expires, now)
SingleClaim = Callable[[str, int, int, int], bool]


class NonceBatcher:
    """Queues claims and decides them in batches on threads of its own (module docstring).

    ``advance`` and ``record`` wait in the calling thread; ``advance_async`` and ``record_async`` on the
    event loop. ``single_advance`` and ``single_record``: the one-claim statements (``store/nonces.py``),
    raising ``KeyGone`` for a deleted key. ``after_batch``: called on the batch thread after each batch
    (the purge of expired windowed nonces runs there, off the event loop).
    """

    def __init__(
        self,
        engine: sa.Engine,
        single_advance: SingleClaim,
        single_record: SingleClaim,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._single_advance = single_advance
        self._single_record = single_record
        self._after_batch = after_batch
        self._queue: list[Claim] = []
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._closed = False
        self._local = threading.local()  # each thread's kept connection
        self._conns: list[sa.Connection] = []
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self.batches = 0  # statements sent, for tests and the curious
        self.claims = 0

    # the callers' side ------------------------------------------------------------------------------

    def advance(self, key_id: str, nonce: int, now_ms: int) -> bool:
        return self._wait(Claim(ADVANCE, key_id, nonce, 0, now_ms))

    def record(self, key_id: str, nonce: int, expires_at: int, now_ms: int) -> bool:
        return self._wait(Claim(RECORD, key_id, nonce, expires_at, now_ms))

    async def advance_async(self, key_id: str, nonce: int, now_ms: int) -> bool:
        return await self._await(Claim(ADVANCE, key_id, nonce, 0, now_ms))

    async def record_async(self, key_id: str, nonce: int, expires_at: int, now_ms: int) -> bool:
        return await self._await(Claim(RECORD, key_id, nonce, expires_at, now_ms))

    def _wait(self, claim: Claim) -> bool:
        claim.event = threading.Event()
        self._submit(claim)
        claim.event.wait()
        if claim.error is not None:
            raise claim.error
        return claim.outcome

    async def _await(self, claim: Claim) -> bool:
        claim.loop = loop = asyncio.get_running_loop()
        claim.future = future = loop.create_future()
        self._submit(claim)
        return bool(await future)

    def _submit(self, claim: Claim) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the nonce batcher is closed")
            self._queue.append(claim)
            if self._idle:
                self._ready.notify()
            elif len(self._threads) < BATCH_THREADS:  # every thread has a batch on the wire: one more
                thread = threading.Thread(target=self._run, name="keyplane-nonces", daemon=True)
                self._threads.append(thread)
                thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._ready.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()

    # the batch thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._idle += 1
                    self._ready.wait()
                    self._idle -= 1
                batch, self._queue = self._queue, []
                closed = self._closed
            if batch:
                self.decide(batch)
                self._resolve(batch)
            if closed:
                return
            if self._after_batch is not None:
                with contextlib.suppress(Exception):  # a purge that fails (an outage) is left to the next one
                    self._after_batch()

    def decide(self, batch: list[Claim]) -> None:
        """Every claim of ``batch`` gets its outcome or its error (never neither)."""
        try:
            self._decide_in_one_statement(batch)
        except sqlalchemy.exc.IntegrityError:  # a key deleted meanwhile: claim by claim, KeyGone for it
            for claim in batch:
                self._decide_alone(claim)
        except BaseException as error:  # an outage: the statement committed nothing, every claim fails
            for claim in batch:
                claim.error = error

    def _decide_alone(self, claim: Claim) -> None:
        try:
            if claim.kind == ADVANCE:
                claim.outcome = self._single_advance(claim.key_id, claim.nonce, 0, claim.now_ms)
            else:
                claim.outcome = self._single_record(claim.key_id, claim.nonce, claim.expires_at, claim.now_ms)
        except BaseException as error:
            claim.error = error

    def _decide_in_one_statement(self, batch: list[Claim]) -> None:
        chains: dict[str, list[Claim]] = {}  # key -> its rising monotonic claims, in arrival order
        records: dict[tuple[str, int], Claim] = {}
        now_ms = batch[0].now_ms
        for claim in batch:
            claim.outcome = False
            if claim.kind == ADVANCE:
                chain = chains.get(claim.key_id)
                if chain is None:
                    chains[claim.key_id] = [claim]
                elif claim.nonce > chain[-1].nonce:
                    chain.append(claim)
                # else refused: an earlier claim of this batch is at least as high
            else:
                now_ms = min(now_ms, claim.now_ms)
                records.setdefault((claim.key_id, claim.nonce), claim)  # a repeat in the batch: refused
        adv_keys = sorted(chains)
        rec_keys = sorted(records)
        params: dict[str, Any] = {
            "adv_keys": adv_keys,
            "adv_lo": [chains[k][0].nonce for k in adv_keys],
            "adv_hi": [chains[k][-1].nonce for k in adv_keys],
            "rec_keys": [k for k, _ in rec_keys],
            "rec_nonces": [n for _, n in rec_keys],
            "rec_expires": [records[r].expires_at for r in rec_keys],
            "now": now_ms,
        }
        rows = self._execute(params)
        advanced: set[str] = set()
        for kind, key_id, nonce in rows:
            if kind == ADVANCE:
                advanced.add(key_id)
            else:
                records[(key_id, int(nonce))].outcome = True
        for key_id, chain in chains.items():
            if key_id in advanced:
                for claim in chain:
                    claim.outcome = True
            else:  # the stored nonce was at least lo: the first is refused, the others each ask alone
                for claim in chain[1:]:
                    self._decide_alone(claim)
        self.batches += 1
        self.claims += len(batch)

    def _execute(self, params: dict[str, Any]) -> list[Any]:
        conn: sa.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                return list(conn.execute(_BATCH, params).all())
            except sqlalchemy.exc.DBAPIError as error:
                self._drop_connection()
                if not error.connection_invalidated:
                    raise
                # a kept connection that died (a server restart): once more on a new one, below
        self._local.conn = conn = self._engine.connect()
        with self._lock:
            self._conns.append(conn)
        try:
            return list(conn.execute(_BATCH, params).all())
        except BaseException:
            self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            with contextlib.suppress(Exception):  # it is broken already
                conn.close()

    def _resolve(self, batch: list[Claim]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Claim]] = {}
        for claim in batch:
            if claim.event is not None:
                claim.event.set()
            elif claim.loop is not None:
                by_loop.setdefault(claim.loop, []).append(claim)
        for loop, claims in by_loop.items():  # one wake-up per loop, not one per claim
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_set_results, claims)


def _set_results(claims: list[Claim]) -> None:
    for claim in claims:
        future = claim.future
        if future is None or future.done():  # cancelled: the client went away
            continue
        if claim.error is not None:
            future.set_exception(claim.error)
        else:
            future.set_result(claim.outcome)

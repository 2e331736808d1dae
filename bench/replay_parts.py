"""What one Bitget replay record costs, part by part, and what the syscall-free alternatives would cost:

    python bench/replay_parts.py

One process, each part 50,000 times, the parts interleaved, the minimum of 5 repeats (microseconds per
record): the token (as before, then from 12 base64 characters, now from the bytes the checker matched),
``ReplayLedger.record`` in memory, on a file this process owns (C table, then the pure-Python one), and on a
file shared with another process (which holds a shared lock meanwhile), the two system calls alone, and an
8-byte compare-and-swap on an ``mmap`` and a robust process-shared mutex, both through ``ctypes``
(skipped where libatomic or robust mutexes are missing). Figures: bench/README.md.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from keyplane.store import replay_ledger
from keyplane.store.replay_ledger import OWNER_FILE, ReplayLedger

N, REPEATS = 50_000, 5
_SHARED_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_SH, 1, 0)
print("locked", flush=True)
time.sleep(600)
"""


def parts(workdir: str) -> dict[str, Callable[[], None]]:
    now = int(time.time() * 1000)
    expires_at = now + 60_000
    digests = [os.urandom(32) for _ in range(N)]
    signatures = [base64.b64encode(digest) for digest in digests]
    a2b, token = binascii.a2b_base64, struct.Struct(">q").unpack_from
    record = struct.Struct("<qq").pack(1, expires_at)
    fd = os.open(f"{workdir}/append", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    rounds = [0]

    def token_before() -> None:
        for s in signatures:
            int.from_bytes(a2b(s)[:8], "big", signed=True)

    def token_12() -> None:
        for s in signatures:
            token(a2b(s[:12]))[0]

    def token_now() -> None:
        for digest in digests:
            token(digest)[0]

    def ledger(directory: str | None) -> None:
        opened = ReplayLedger(directory)
        accept = opened.record
        for digest in digests:
            accept("k", token(digest)[0], expires_at, now)
        opened.close()

    def ledger_in_memory() -> None:
        ledger(None)

    def ledger_file() -> None:
        rounds[0] += 1
        ledger(f"{workdir}/ledger{rounds[0]}")

    def ledger_file_python_table() -> None:
        c_table, replay_ledger.Tokens = replay_ledger.Tokens, replay_ledger._PyTokens
        try:
            ledger_file()
        finally:
            replay_ledger.Tokens = c_table

    def ledger_file_shared() -> None:
        rounds[0] += 1
        directory = f"{workdir}/ledger{rounds[0]}"
        os.makedirs(directory)
        other = subprocess.Popen(  # another process that records here: it holds a shared lock
            [sys.executable, "-c", _SHARED_HOLDER, os.path.join(directory, OWNER_FILE)], stdout=subprocess.PIPE
        )
        assert other.stdout is not None and other.stdout.readline() == b"locked\n"
        try:
            ledger(directory)
        finally:
            other.kill()
            other.wait()

    def write_and_lseek() -> None:
        write, lseek, here = os.write, os.lseek, os.SEEK_CUR
        for _ in signatures:
            write(fd, record)
            lseek(fd, 0, here)

    def write_alone() -> None:
        write = os.write
        for _ in signatures:
            write(fd, record)

    def lseek_alone() -> None:
        lseek, here = os.lseek, os.SEEK_CUR
        for _ in signatures:
            lseek(fd, 0, here)

    lock = threading.Lock()

    def threading_lock() -> None:
        for _ in signatures:
            with lock:
                pass

    found: dict[str, Callable[[], None]] = {
        "token, as before (a2b_base64 of 44 chars + int.from_bytes)": token_before,
        "token from 12 chars (a2b_base64 + struct.unpack_from)": token_12,
        "token now (struct.unpack_from of the matched bytes)": token_now,
        "ReplayLedger.record in memory (token included)": ledger_in_memory,
        "ReplayLedger.record, file owned (token included)": ledger_file,
        "ReplayLedger.record, file owned, Python table": ledger_file_python_table,
        "ReplayLedger.record, file shared (token included)": ledger_file_shared,
        "O_APPEND write + lseek": write_and_lseek,
        "O_APPEND write": write_alone,
        "lseek": lseek_alone,
        "threading.Lock acquire + release": threading_lock,
    }
    size = 1 << 22
    table_fd = os.open(f"{workdir}/table", os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(table_fd, size)
    mapped = mmap.mmap(table_fd, size)
    mapped[:] = b"\0" * size  # every page present before the timing
    base = ctypes.addressof((ctypes.c_char * size).from_buffer(mapped))
    atomic = ctypes.util.find_library("atomic")
    if atomic:
        cas = ctypes.CFUNCTYPE(
            ctypes.c_bool, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_bool, ctypes.c_int, ctypes.c_int
        )(("__atomic_compare_exchange_8", ctypes.CDLL(atomic)))
        expected = ctypes.c_uint64(0)
        where = ctypes.addressof(expected)

        def ctypes_cas() -> None:
            for i in range(N):
                expected.value = 0
                cas(base + 8 * (i % (size // 16)), where, i + 1, False, 5, 5)
            mapped[: size // 2] = b"\0" * (size // 2)

        found["8-byte compare-and-swap on an mmap (ctypes, libatomic)"] = ctypes_cas
    libc = ctypes.CDLL(None)
    attributes = ctypes.create_string_buffer(64)
    libc.pthread_mutexattr_init(attributes)
    if hasattr(libc, "pthread_mutexattr_setrobust") and libc.pthread_mutexattr_setpshared(attributes, 1) == 0 and (
        libc.pthread_mutexattr_setrobust(attributes, 1) == 0
    ):
        mutex = ctypes.c_void_p(base + size // 2)
        libc.pthread_mutex_init(mutex, attributes)
        lock_ = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(("pthread_mutex_lock", libc))
        unlock_ = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(("pthread_mutex_unlock", libc))

        def robust_mutex() -> None:
            for _ in signatures:
                lock_(mutex)
                unlock_(mutex)

        found["robust process-shared mutex lock + unlock (ctypes)"] = robust_mutex
    return found


def main() -> None:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="keyplane-replay-parts-") as workdir:
        measured = parts(workdir)
        best: dict[str, float] = {}
        for _ in range(REPEATS):
            for name, run in measured.items():
                started = time.perf_counter()
                run()
                best[name] = min(best.get(name, float("inf")), (time.perf_counter() - started) / N * 1e6)
    for name, us in best.items():
        print(f"{name:58s} {us:6.2f} us")
    print(f"load {load:.1f} -> {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

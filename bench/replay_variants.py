"""``inprocess.py`` with the Bitget replay record swapped out, to see what each part of it costs:

    python bench/replay_variants.py MODE --keys 1000 --seconds 3

MODE: ``file`` (as in service: this process alone owns the ledger), ``shared`` (as with ``serve --workers
N``: another process holds a shared lock on the ledger meanwhile, so every record is an append), ``pytable``
(owned, on the pure-Python token table an install without a compiler uses), ``mem``
(the replay ledger's in-memory mode: the locked path, no file), ``none`` (the token computed, nothing
recorded: every POST is new), ``off`` (the POST rule's ``replay_protect`` off: no token, no record). Run the
modes alternately: on a shared machine the load swings between runs. A diagnostic, not a target; the figures
are in bench/README.md ("Replay records").
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODES = ("file", "shared", "pytable", "mem", "none", "off")
_SHARED_HOLDER = """
import fcntl, os, sys, time
os.makedirs(sys.argv[1], exist_ok=True)
fd = os.open(os.path.join(sys.argv[1], "owner"), os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_SH, 1, 0)
print("locked", flush=True)
time.sleep(600)
"""


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(MODES)}}} [inprocess.py options]")
    mode = sys.argv.pop(1)
    sys.path.insert(0, str(HERE))
    source = (HERE / "inprocess.py").read_text()
    if mode in ("none", "off"):  # a repeat is accepted there: the bench's last check does not apply
        source = source.replace('assert replayed == "REQUEST_REPLAYED", replayed', "pass")
    inprocess = types.ModuleType("inprocess")
    inprocess.__file__ = str(HERE / "inprocess.py")
    sys.modules["inprocess"] = inprocess
    exec(compile(source, inprocess.__file__, "exec"), inprocess.__dict__)

    import keyplane.store.nonces as store_nonces
    from keyplane.auth.nonces import NonceGuard
    from keyplane.auth.request import Reason

    holders: list[Any] = []  # the processes holding a shared lock (mode ``shared``)
    if mode == "shared":
        import subprocess

        ledger = store_nonces.ReplayLedger

        def shared_ledger(directory: str | None) -> object:
            if directory is not None:
                holder = subprocess.Popen([sys.executable, "-c", _SHARED_HOLDER, directory], stdout=subprocess.PIPE)
                assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
                holders.append(holder)
            return ledger(directory)

        store_nonces.ReplayLedger = shared_ledger
    elif mode == "pytable":
        from keyplane.store import replay_ledger

        replay_ledger.Tokens = replay_ledger._PyTokens
    elif mode == "mem":
        ledger = store_nonces.ReplayLedger
        store_nonces.ReplayLedger = lambda directory: ledger(None)
    elif mode == "none":
        NonceGuard.accept_once = lambda self, key_id, token, expires_at, now_ms: Reason.VALID
        guard_init = NonceGuard.__init__

        def init_recording_nothing(self: NonceGuard, *args: object, **kwargs: object) -> None:
            guard_init(self, *args, **kwargs)  # type: ignore[arg-type]
            self.record_once_inline = lambda key_id, token, expires_at, now_ms: True  # what the verifier calls

        NonceGuard.__init__ = init_recording_nothing  # type: ignore[method-assign]
    elif mode == "off":
        for rule in inprocess.BENCH_ENDPOINTS["rules"]:
            if rule["method"] == "POST" and rule["path"] == inprocess.BITGET_POST_PATH:
                rule["replay_protect"] = False
    try:
        inprocess.main()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


if __name__ == "__main__":
    main()

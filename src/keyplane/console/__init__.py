"""The operators' web console at ``/console`` (issue 12): server-rendered pages over the service layer,
signed in with an operator token. See docs/architecture.md, "Web console"."""

from __future__ import annotations

import time
from typing import Any

from keyplane.console.app import PREFIX, Console
from keyplane.console.chart import Series
from keyplane.console.sessions import Sessions
from keyplane.metrics import HISTORY_MINUTES, Metrics, WorkerFiles, merge_history

__all__ = ["PREFIX", "Console", "build_console"]


def build_console(
    service: Any, tokens: Any, metrics: Metrics, files: WorkerFiles | None, *, idle_minutes: int, secure_cookie: bool
) -> Console:
    from keyplane.console import views  # the views import the app module: after it is whole

    console = Console(
        sessions=Sessions(lambda: service.master_key, idle_seconds=idle_minutes * 60),
        tokens=tokens,
        secure_cookie=secure_cookie,
    )

    def history() -> Series:
        now_minute = int(time.time() // 60) * 60
        since = now_minute - (HISTORY_MINUTES - 1) * 60
        snapshots = list(files.snapshots()) if files is not None else [{"history": metrics.history.recent()}]
        merged = merge_history(snapshots, since)
        minutes = [(start, merged.get(start, {})) for start in range(since, now_minute + 1, 60)]
        return Series(minutes, counting=metrics.counting)

    views.install(console, service, history)
    return console

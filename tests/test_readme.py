"""The README works as written (issue 10 item 8): its shell and Python blocks, in order, in a fresh directory
beside a live ``keyplane serve`` on the embedded default (no configuration).

A block after ``<!-- not run: why -->`` is skipped; a block after ``<!-- run with the server stopped -->``
runs with the server stopped (the backup and the restore), and the server is started again before the next
block that needs it. Every other block runs, and must exit 0. The one change made to a block is the
server's address: ``127.0.0.1:8080`` becomes the free port the test's server listens on. Between the
backup and the restore the test makes changes and then loses the files; after the restore the changes
are gone and the keys the README made still verify (their secrets open under the restored master key).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from conftest import KEYPLANE, free_port

README = Path(__file__).parents[1] / "README.md"
FENCE = re.compile(r"(?:^<!--\s*(?P<mark>[^\n]*?)\s*-->\n)?^```(?P<lang>sh|python)\n(?P<code>.*?)^```$", re.M | re.S)
# sections whose blocks another test runs, as written, with what they need (keys in the environment)
RUN_ELSEWHERE = {"Python SDK": "test_readme_sdk.py"}
FILES = ("keyplane.db", "keyplane.db-wal", "keyplane.db.master-key", "keyplane.db.nonces", "keyplane.db.replay")


@dataclass
class Block:
    lang: str
    code: str
    mark: str
    line: int
    section: str

    @property
    def runs(self) -> bool:
        return not self.mark.startswith("not run") and self.section not in RUN_ELSEWHERE

    @property
    def server_stopped(self) -> bool:
        return self.mark == "run with the server stopped"


def blocks() -> list[Block]:
    text = README.read_text()
    headings = [(m.start(), m.group(1)) for m in re.finditer(r"^## (.+)$", text, re.M)]
    found = [
        Block(m["lang"], m["code"], (m["mark"] or "").strip(), text.count("\n", 0, m.start()) + 1,
              [title for at, title in headings if at < m.start()][-1])
        for m in FENCE.finditer(text)
    ]
    assert len(found) == len(re.findall(r"^```(?:sh|python)$", text, re.M)), "a block the pattern missed"
    for section, test in RUN_ELSEWHERE.items():
        assert any(b.section == section for b in found) and (Path(__file__).parent / test).exists()
    for block in found:
        assert block.mark in ("", "run with the server stopped") or block.mark.startswith("not run: "), block.mark
    return found


class Serve:
    """``keyplane serve`` in ``workdir`` with no settings at all, as ``scripts/serve`` runs it."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env, self.port = workdir, env, free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir.parent / f"{workdir.name}-serve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([*KEYPLANE, "serve", "--port", str(self.port)], cwd=self.workdir,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_") and k not in ("COLUMNS", "LINES")}
    # `pip install ccxt` as written, without the network: ccxt is installed (the test extras pin it)
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    # the quickstart's second terminal, where `source .venv/bin/activate` has run: later sections' commands
    # (`keyplane tokens create` in "Web console") rely on it
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(block: Block, workdir: Path, env: dict[str, str], port: int) -> subprocess.CompletedProcess[str]:
    code = block.code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    command = ["bash", "-euo", "pipefail", "-c", code] if block.lang == "sh" else [sys.executable, "-c", code]
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


def _whitebit_sub_accounts(workdir: Path, url: str) -> list[str]:
    """The WhiteBIT main key the README made, signing a request through ccxt: its sub-accounts' aliases."""
    import ccxt

    key = json.loads((workdir / "whitebit-key.json").read_text())
    whitebit = ccxt.whitebit({"apiKey": key["apiKey"], "secret": key["apiSecret"]})
    whitebit.urls["api"]["v4"] = {"public": url + "/api/v4/public", "private": url + "/api/v4"}
    return [account["alias"] for account in whitebit.v4PrivatePostSubAccountList({})["data"]]


def _main_accounts(workdir: Path, env: dict[str, str]) -> list[str]:
    out = subprocess.run([*KEYPLANE, "accounts", "list", "--json"], cwd=workdir, env=env, capture_output=True,
                         text=True, check=True)
    return [row["name"] for row in json.loads(out.stdout)]


def test_every_setting_the_code_reads_is_in_the_readme() -> None:
    source = README.parents[0] / "src" / "keyplane"
    # the names the code reads: string literals ("KEYPLANE_…"), not the ones its comments mention
    literal = re.compile(r"[\"'](KEYPLANE_[A-Z_]*[A-Z])[\"']")
    read = {name for path in source.rglob("*.py") for name in literal.findall(path.read_text())}
    text = README.read_text()
    assert read and {name for name in read if not re.search(f"`{name}[`=]", text)} == set()
    for option in ("--workers", "--host", "--port", "--database", "KEYPLANE_LOG_LEVEL", "KEYPLANE_LOG_FORMAT"):
        assert option in text


def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    (workdir / ".venv").symlink_to(Path(sys.prefix))  # the venv `scripts/serve` would have made
    env = _env()
    server = Serve(workdir, env)
    server.start()
    ran: list[int] = []
    stopped = 0
    try:
        for block in blocks():
            if not block.runs:
                continue
            if block.server_stopped:
                server.stop()
                stopped += 1
                if stopped == 2:  # the restore: first a change made after the backup, then the files lost
                    assert set(os.listdir(workdir / "backup")) >= set(FILES) - {"keyplane.db-wal"}  # WAL: if any
                    subprocess.run([*KEYPLANE, "accounts", "create", "--name", "after-backup"], cwd=workdir,
                                   env=env, check=True, capture_output=True)
                    assert "after-backup" in _main_accounts(workdir, env)
                    for name in (*FILES, "keyplane.db-shm"):
                        path = workdir / name
                        if path.is_dir():
                            shutil.rmtree(path)
                        else:
                            path.unlink(missing_ok=True)
            elif server.process is None:
                server.start()
            result = _run(block, workdir, env, server.port)
            assert result.returncode == 0, f"README line {block.line}:\n{result.stdout}\n{result.stderr}"
            assert "Traceback" not in result.stderr, f"README line {block.line}:\n{result.stderr}"
            ran.append(block.line)
        assert stopped == 2, "the backup and the restore blocks"
        if server.process is None:
            server.start()
        # the restore brought back the store as it was: the change made after the backup is gone, and the
        # keys the README made verify (their sealed secrets open) on a server started on the restored files
        names = _main_accounts(workdir, env)
        assert "acme" in names and "after-backup" not in names
        assert "desk-one" in _whitebit_sub_accounts(workdir, server.url)
    finally:
        server.stop()
    assert ran == [block.line for block in blocks() if block.runs]
    assert len(ran) >= 7  # quickstart, two clients, the operator commands, backup, restore, upgrading

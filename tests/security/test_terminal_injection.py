"""Stored text shown by the command line is shown, never obeyed: a key's label (which a main account's key
sets for its sub-accounts' keys through either dialect), an account's name or an operator token's name may
hold Rich markup or terminal control characters. ``keyplane keys list`` and ``tokens list`` must neither
crash on ``[/]`` (Rich read it as markup: MarkupError, exit 1) nor pass an escape sequence to the terminal,
on a terminal (a Rich table) or piped."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.runtime import build_runtime
from keyplane.services.tokens import TokenService
from test_cli_operator import KEYPLANE, _env, _run_on_terminal

LABEL = "\x1b]0;pw\x07[/]\x9b"  # an OSC title change, a Rich closing tag, a C1 CSI: 11 characters
TOKEN_NAME = "[link=http://evil.example]x[/link] [/] \u009b2J"


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    workdir = tmp_path_factory.mktemp("terminal-injection")
    url = f"sqlite:///{workdir / 'keyplane.db'}"
    runtime = build_runtime(Settings(database_url=url), create=True)
    try:
        account = runtime.service.accounts.create_main_account("injected")
        runtime.service.keys.issue_main_key(account.uid, Scheme.BITGET, label=LABEL, permissions=("read",))
        TokenService(runtime.store).create(["read"], name=TOKEN_NAME)
    finally:
        runtime.close()
    return workdir, url, str(account.uid)


def commands(url: str, uid: str) -> list[tuple[str, ...]]:
    return [("keys", "list", "--account", uid, "--database", url), ("tokens", "list", "--database", url)]


def assert_shown_not_obeyed(output: str) -> None:
    assert "\x1b]" not in output and "\x07" not in output and "\x9b" not in output, repr(output)
    assert "[/]" in output  # the text itself, as stored


def test_on_a_terminal(database: tuple[Path, str, str]) -> None:
    workdir, url, uid = database
    for args in commands(url, uid):
        # _run_on_terminal asserts exit 0 and strips Rich's own CSI styling (\x1b[...m), not an OSC
        output = _run_on_terminal(workdir, *args, columns=250, env=_env())
        assert_shown_not_obeyed(output)
        assert "\\x1b]0;pw\\x07[/]\\x9b" in output or "\\x9b2J" in output


def test_piped(database: tuple[Path, str, str]) -> None:
    workdir, url, uid = database
    for args in commands(url, uid):
        out = subprocess.run([*KEYPLANE, *args], cwd=workdir, env=_env(), capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert_shown_not_obeyed(out.stdout)
        assert re.search(r"\\x1b\]0;pw\\x07\[/\]\\x9b|\[link=http://evil\.example\]x\[/link\]", out.stdout)

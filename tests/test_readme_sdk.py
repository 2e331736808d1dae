"""The README's "Python SDK" examples, run as written against a live ``keyplane serve``: each ```python block
of that section runs in a fresh interpreter with the keys it reads from the environment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import bitget_helpers as h
from conftest import Server, make_server
from keyplane.domain.model import Scheme

README = Path(__file__).parent.parent / "README.md"
RSA = json.loads((Path(__file__).parent / "vectors" / "bitget.json").read_text())["rsa"]


def sdk_examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("\n## Python SDK\n"):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    workdir = tmp_path_factory.mktemp("readme-sdk")
    server: Server = h.track(make_server(workdir))
    server.start()
    try:
        bitget = h.main_key(server)
        service = h._operator(server).service
        rsa_key = service.keys.issue_main_key(int(bitget.uid), Scheme.BITGET, public_key_pem=RSA["public_key_pem"],
                                              permissions=["read"], ip_list=["127.0.0.1"])
        whitebit = service.keys.issue_main_key(int(bitget.uid), Scheme.WHITEBIT)
        assert rsa_key.passphrase and whitebit.secret
        h.RECORD.secret(rsa_key.passphrase, whitebit.secret)
        pem = workdir / "bitget-rsa.pem"
        pem.write_text(RSA["private_key_pem"])
        yield {
            **{k: v for k, v in os.environ.items() if not k.startswith(("BITGET_", "WHITEBIT_"))},
            "BITGET_URL": server.base_url, "WHITEBIT_URL": server.base_url,
            "BITGET_API_KEY": bitget.api_key, "BITGET_SECRET": bitget.secret, "BITGET_PASSPHRASE": bitget.passphrase,
            "BITGET_RSA_API_KEY": rsa_key.key.api_key, "BITGET_RSA_PASSPHRASE": rsa_key.passphrase,
            "BITGET_RSA_PRIVATE_KEY_FILE": str(pem),
            "WHITEBIT_API_KEY": whitebit.key.api_key, "WHITEBIT_SECRET": whitebit.secret,
            "KEYPLANE_URL": server.base_url,
            "KEYPLANE_TOKEN": server.cli("tokens", "create", "--scope", "all", "--name", "readme")["token"],
            "UID": bitget.uid,
        }
    finally:
        server.stop()


def test_the_section_has_an_example_for_each_dialect_and_signing_kind() -> None:
    examples = sdk_examples()
    assert len(examples) == 4
    assert "BitgetAuth(" in examples[0] and "BitgetAuth.rsa(" in examples[1] and "WhiteBITAuth(" in examples[2]
    assert "Client(" in examples[3]


@pytest.mark.parametrize("index", range(4), ids=["bitget-hmac", "bitget-rsa-async", "whitebit", "native-api"])
def test_readme_sdk_example_runs(env: dict[str, str], index: int) -> None:
    code = sdk_examples()[index]
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    expected = {
        0: [f"00000 {env['UID']}", "0"],
        1: ["['00000', '00000', '00000']"],
        2: ["200 10"],
        3: ["bg_ True", "bot True", "True", "name_taken", "apikey.disable"],
    }[index]
    assert lines == expected
    for name in ("BITGET_SECRET", "BITGET_PASSPHRASE", "WHITEBIT_SECRET", "BITGET_RSA_PASSPHRASE", "KEYPLANE_TOKEN"):
        assert env[name] not in done.stdout + done.stderr

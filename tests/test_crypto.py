"""Sealed secrets (AES-256-GCM, the key id as associated data), passphrase hashes, key generation."""

from __future__ import annotations

import base64
import os
import re

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane import crypto


@pytest.fixture(scope="module")
def master() -> crypto.MasterKey:
    return crypto.MasterKey(os.urandom(32))


@settings(max_examples=50)
@given(secret=st.binary(max_size=256), key_id=st.text(min_size=1, max_size=40))
def test_a_sealed_secret_opens_under_its_own_key_id(secret: bytes, key_id: str) -> None:
    master = crypto.MasterKey(b"m" * 32)
    sealed = master.seal(secret, key_id)
    assert master.unseal(sealed, key_id) == secret
    if len(secret) >= 8:
        assert secret not in sealed


def test_a_sealed_secret_cannot_be_moved_to_another_key(master: crypto.MasterKey) -> None:
    sealed = master.seal(b"the secret", "key-a")
    with pytest.raises(InvalidTag):
        master.unseal(sealed, "key-b")


def test_a_tampered_seal_does_not_open(master: crypto.MasterKey) -> None:
    sealed = bytearray(master.seal(b"the secret", "key-a"))
    sealed[-1] ^= 1
    with pytest.raises(InvalidTag):
        master.unseal(bytes(sealed), "key-a")
    with pytest.raises(ValueError):
        master.unseal(b"\x02" + bytes(sealed[1:]), "key-a")


def test_sealing_twice_gives_different_bytes(master: crypto.MasterKey) -> None:
    assert master.seal(b"same", "k") != master.seal(b"same", "k")


def test_another_master_key_cannot_open_a_seal(master: crypto.MasterKey) -> None:
    with pytest.raises(InvalidTag):
        crypto.MasterKey(os.urandom(32)).unseal(master.seal(b"s", "k"), "k")


def test_a_key_ring_opens_old_seals_and_seals_with_the_newest() -> None:
    old, new = os.urandom(32), os.urandom(32)
    sealed_old = crypto.MasterKey(old).seal(b"s", "k")
    ring = crypto.MasterKey(new, old)
    assert ring.unseal(sealed_old, "k") == b"s"
    sealed_new = ring.seal(b"s", "k")
    assert crypto.MasterKey(new).unseal(sealed_new, "k") == b"s"
    with pytest.raises(InvalidTag):
        crypto.MasterKey(old).unseal(sealed_new, "k")


def test_master_keys_are_read_as_hex_or_base64_one_per_line_or_comma_separated() -> None:
    raw = os.urandom(32)
    hex_text, b64_text = raw.hex(), base64.urlsafe_b64encode(raw).decode().rstrip("=")
    sealed = crypto.MasterKey(raw).seal(b"s", "k")
    for text in (hex_text, b64_text, f"{hex_text}\n", f"{os.urandom(32).hex()},{hex_text}"):
        assert crypto.MasterKey.from_text(text).unseal(sealed, "k") == b"s"
    for bad in ("", "abcd", "zz" * 32, os.urandom(16).hex()):
        with pytest.raises(ValueError):
            crypto.MasterKey.from_text(bad)
    with pytest.raises(ValueError):
        crypto.MasterKey(b"short")


def test_a_passphrase_hash_verifies_only_its_passphrase() -> None:
    stored = crypto.hash_passphrase("abcd1234")
    assert "abcd1234" not in stored and stored.startswith("$argon2id$")
    assert crypto.verify_passphrase(stored, "abcd1234")
    assert not crypto.verify_passphrase(stored, "abcd12345")
    assert not crypto.verify_passphrase("not a hash", "abcd1234")
    assert crypto.hash_passphrase("abcd1234") != stored  # salted


def test_generated_keys_secrets_and_passphrases_have_their_shapes() -> None:
    assert re.fullmatch(r"bg_[0-9a-f]{32}", crypto.new_bitget_api_key())
    assert re.fullmatch(r"[0-9a-f]{64}", crypto.new_bitget_secret())
    assert re.fullmatch(r"[0-9a-f]{16}", crypto.new_passphrase())
    assert len({crypto.new_bitget_secret() for _ in range(100)}) == 100

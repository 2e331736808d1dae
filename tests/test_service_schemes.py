"""A key belongs to one dialect: the other dialect neither lists it nor changes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyplane import crypto
from keyplane.domain.model import Scheme
from keyplane.errors import ApiKeyNotFound
from keyplane.services import Actor, KeyplaneService, NewKeySpec
from keyplane.store import Store


def test_a_key_of_one_dialect_is_invisible_to_the_other(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    store.migrate()
    service = KeyplaneService(store, crypto.MasterKey(b"k" * 32))
    actor = Actor(account=service.accounts.create_main_account("venue"))
    sub = service.subaccounts.create_sub_account(actor, Scheme.BITGET, name="shared")
    spec = NewKeySpec(label="b", passphrase="abcd1234")
    bitget = service.keys.create_sub_key(actor, Scheme.BITGET, spec, uid=sub.uid)
    whitebit = service.keys.create_sub_key(actor, Scheme.WHITEBIT, NewKeySpec(label="w", key_type=1), uid=sub.uid)

    listed = service.keys.list_sub_keys(actor, uid=sub.uid, scheme=Scheme.BITGET)
    assert [key.api_key for key, _ in listed] == [bitget.key.api_key]
    assert len(service.keys.list_sub_keys(actor, uid=sub.uid)) == 2
    with pytest.raises(ApiKeyNotFound):
        service.keys.reset_sub_key(actor, key_id=bitget.key.id, scheme=Scheme.WHITEBIT)
    with pytest.raises(ApiKeyNotFound):
        service.keys.modify_sub_key(actor, api_key=whitebit.key.api_key, label="x", scheme=Scheme.BITGET)
    with pytest.raises(ApiKeyNotFound):
        service.keys.delete_sub_key(actor, key_id=bitget.key.id, scheme=Scheme.WHITEBIT)
    assert service.keys.find_sub_key(actor, key_id=whitebit.key.id, scheme=Scheme.WHITEBIT).label == "w"
    store.close()

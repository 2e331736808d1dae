"""Validation rules for names, passphrases, labels and permissions, as the exchanges document them."""

from __future__ import annotations

import re
from collections.abc import Iterable

from keyplane.errors import InvalidLabel, InvalidName, InvalidPassphrase, InvalidPermission

BITGET_SUB_NAME = re.compile(r"[A-Za-z]{8}")
# "English letters of 8-32 characters + numbers": the documented example passphrase is "12345678",
# so letters and digits are both allowed but neither is required.
PASSPHRASE = re.compile(r"[A-Za-z0-9]{8,32}")
LABEL_MAX = 20

BITGET_PERMISSIONS = ("spot_trade", "margin_trade", "contract_trade", "transfer", "read")
BITGET_DEFAULT_PERMISSIONS = ("spot_trade", "contract_trade")


def check_bitget_sub_name(name: object) -> str:
    if not isinstance(name, str) or not BITGET_SUB_NAME.fullmatch(name):
        raise InvalidName("sub-account name must be 8 English letters", field="subAccountName")
    return name


def check_passphrase(passphrase: object) -> str:
    if not isinstance(passphrase, str) or not PASSPHRASE.fullmatch(passphrase):
        raise InvalidPassphrase("passphrase must be 8-32 letters and digits", field="passphrase")
    return passphrase


def check_label(label: object, *, required: bool = True) -> str:
    if label is None and not required:
        return ""
    if not isinstance(label, str) or not 1 <= len(label) <= LABEL_MAX:
        raise InvalidLabel(f"label must be 1 to {LABEL_MAX} characters", field="label")
    return label


def normalize_bitget_permissions(perms: Iterable[object]) -> tuple[str, ...]:
    """Accepts both ``["spot_trade","read"]`` and the docs' own ``["spot_trade,read"]`` form."""
    out: list[str] = []
    for entry in perms:
        if not isinstance(entry, str):
            raise InvalidPermission("permission must be a string", field="permList")
        for perm in (p.strip() for p in entry.split(",")):
            if not perm:
                continue
            if perm not in BITGET_PERMISSIONS:
                raise InvalidPermission(f"unknown permission {perm}", field="permList")
            if perm not in out:
                out.append(perm)
    return tuple(out)

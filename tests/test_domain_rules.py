"""The pure rules: names, passphrases, labels, permissions, IP rules and allowlists, policy overrides."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain.ipnet import IpAllowlist, canonical_client_ip, normalize_ip_rule
from keyplane.domain.policy import BITGET_DEFAULTS, Policy
from keyplane.domain.rules import (
    check_bitget_sub_name,
    check_label,
    check_passphrase,
    normalize_bitget_permissions,
)
from keyplane.errors import InvalidIp, InvalidLabel, InvalidName, InvalidPassphrase, InvalidPermission

LETTERS = string.ascii_letters
ALNUM = string.ascii_letters + string.digits


# names -----------------------------------------------------------------------------------------------


@given(st.text(alphabet=LETTERS, min_size=8, max_size=8))
def test_any_8_english_letters_make_a_bitget_name(name: str) -> None:
    assert check_bitget_sub_name(name) == name


@given(st.text(max_size=12))
def test_a_bitget_name_is_exactly_8_ascii_letters(name: str) -> None:
    valid = len(name) == 8 and all(c in LETTERS for c in name)
    if valid:
        assert check_bitget_sub_name(name) == name
    else:
        with pytest.raises(InvalidName):
            check_bitget_sub_name(name)


FULLWIDTH_ABCDEFGH = "".join(chr(0xFF41 + i) for i in range(8))


@pytest.mark.parametrize("name", [None, 12345678, ["abcdefgh"], "abcdefgh\n", FULLWIDTH_ABCDEFGH])
def test_a_bitget_name_that_is_not_a_plain_string_is_invalid(name: object) -> None:
    with pytest.raises(InvalidName):
        check_bitget_sub_name(name)


# passphrases and labels --------------------------------------------------------------------------------


@given(st.text(alphabet=ALNUM, min_size=8, max_size=32))
def test_8_to_32_letters_and_digits_make_a_passphrase(passphrase: str) -> None:
    assert check_passphrase(passphrase) == passphrase


@given(st.text(max_size=40))
def test_a_passphrase_is_exactly_8_to_32_letters_and_digits(passphrase: str) -> None:
    valid = 8 <= len(passphrase) <= 32 and all(c in ALNUM for c in passphrase)
    if valid:
        assert check_passphrase(passphrase) == passphrase
    else:
        with pytest.raises(InvalidPassphrase):
            check_passphrase(passphrase)


@given(st.text(max_size=25))
def test_a_label_is_1_to_20_characters(label: str) -> None:
    if 1 <= len(label) <= 20:
        assert check_label(label) == label
    else:
        with pytest.raises(InvalidLabel):
            check_label(label)


def test_an_optional_label_may_be_absent_but_not_of_another_type() -> None:
    assert check_label(None, required=False) == ""
    with pytest.raises(InvalidLabel):
        check_label(None)
    with pytest.raises(InvalidLabel):
        check_label(5, required=False)


# permissions ---------------------------------------------------------------------------------------------


def test_permissions_accept_both_list_forms_keep_order_and_drop_repeats() -> None:
    assert normalize_bitget_permissions(["spot_trade,contract_trade", "read", "spot_trade"]) == (
        "spot_trade", "contract_trade", "read")
    assert normalize_bitget_permissions([" read , transfer ", ""]) == ("read", "transfer")
    assert normalize_bitget_permissions([]) == ()


@pytest.mark.parametrize("perms", [["withdraw"], ["spot_trade,withdraw"], [1], [None], ["READ"]])
def test_an_unknown_permission_is_refused(perms: list[object]) -> None:
    with pytest.raises(InvalidPermission):
        normalize_bitget_permissions(perms)


# IP rules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1"),
        (" 10.0.0.1 ", "10.0.0.1"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("2001:DB8::0001", "2001:db8::1"),
        ("2001:db8:0:0::/32", "2001:db8::/32"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("::ffff:0:0/95", "::fffe:0:0/95"),
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_ip_rules_are_kept_in_one_canonical_form(entry: str, canonical: str) -> None:
    assert normalize_ip_rule(entry) == canonical


@pytest.mark.parametrize("entry", ["", "300.1.1.1", "1.2.3", "10.0.0.0/33", "::/129", "host.example", "1.2.3.4/x",
                                   None, 1, "1" * 65])
def test_a_bad_ip_rule_is_refused(entry: object) -> None:
    with pytest.raises(InvalidIp):
        normalize_ip_rule(entry)


def test_the_client_ip_is_compared_as_plain_ipv4_when_it_is_ipv4_mapped() -> None:
    assert canonical_client_ip("::ffff:127.0.0.1") == "127.0.0.1"
    assert canonical_client_ip("2001:db8::1") == "2001:db8::1"
    assert canonical_client_ip("not an ip") == "not an ip"


ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))


@given(st.lists(st.one_of(ipv4, ipv6), max_size=5), st.lists(st.tuples(st.one_of(ipv4, ipv6), st.integers(0, 128)),
                                                               max_size=3), st.one_of(ipv4, ipv6))
def test_an_allowlist_allows_exactly_its_addresses_and_ranges(
    exact: list[str], ranges: list[tuple[str, int]], client: str
) -> None:
    networks = [ipaddress.ip_network(f"{addr}/{min(prefix, ipaddress.ip_address(addr).max_prefixlen)}", strict=False)
                for addr, prefix in ranges]
    rules = [normalize_ip_rule(e) for e in exact] + [normalize_ip_rule(str(n)) for n in networks]
    allowlist = IpAllowlist(rules)
    address = ipaddress.ip_address(canonical_client_ip(client))
    # an IPv4-mapped range counts as the IPv4 range it maps (as a mapped client does)
    compared = [ipaddress.ip_network(normalize_ip_rule(str(n))) for n in networks]
    expected = str(address) in {canonical_client_ip(e) for e in exact} or any(
        address.version == n.version and address in n for n in compared)
    assert allowlist.allows(client) is expected
    assert allowlist.empty is (not rules)


def test_an_ipv4_mapped_client_matches_an_ipv4_range() -> None:
    allowlist = IpAllowlist(["10.0.0.0/8"])
    assert allowlist.allows("::ffff:10.1.2.3") and not allowlist.allows("::ffff:11.1.2.3")


# policy ---------------------------------------------------------------------------------------------------


def test_the_bitget_defaults_are_the_documented_limits() -> None:
    limits = Policy().bitget
    assert (limits.sub_accounts_per_main, limits.keys_per_sub_account, limits.ips_per_key, limits.batch_size) == (
        20, 10, 30, 5)
    assert limits.rate_limits["batch-create-subaccount-and-apikey"] == "1/second"
    assert limits.rate_limits["create-virtual-subaccount"] == "5/second"
    assert limits.rate_limits["virtual-subaccount-list"] == "10/second"


def test_policy_overrides_change_only_what_they_name() -> None:
    overrides = {"bitget": {"sub_accounts_per_main": 50, "rate_limits": {"account-info": "1/second"}}}
    policy = Policy.from_overrides(overrides)
    assert policy.bitget.sub_accounts_per_main == 50
    assert policy.bitget.keys_per_sub_account == BITGET_DEFAULTS.keys_per_sub_account
    assert policy.bitget.rate_limits["account-info"] == "1/second"
    assert policy.bitget.rate_limits["batch-create-subaccount-and-apikey"] == "1/second"
    assert policy.whitebit == Policy().whitebit


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"bitget": {"sub_accounts_per_main": "3"}}, "sub_accounts_per_main"),
        ({"bitget": {"batch_size": 0}}, "batch_size"),
        ({"bitget": {"ips_per_key": True}}, "ips_per_key"),
        ({"bitget": {"sub_acounts_per_main": 3}}, "sub_acounts_per_main"),
        ({"bitgett": {}}, "bitgett"),
        ({"bitget": {"rate_limits": {"virtual-subaccount-list": 10}}}, "virtual-subaccount-list"),
        ({"bitget": {"rate_limits": {"account-info": "5/fortnight"}}}, "account-info"),
        ({"whitebit": {"default_rate_limit": "often"}}, "default_rate_limit"),
        ({"bitget": {"rate_limits": ["1/second"]}}, "rate_limits"),
    ],
)
def test_a_mistyped_policy_override_is_refused_by_name(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Policy.from_overrides(overrides)

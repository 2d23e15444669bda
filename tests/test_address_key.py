"""address_key: parse_ip's verdict and text, without ipaddress objects for IPv4."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core.names import address_key, parse_ip

TRICKY = ["1.2.3.4", "01.2.3.4", "1.2.3.04", "0.0.0.0", "255.255.255.255", "256.1.1.1",
          "1.2.3", "1.2.3.4.5", " 1.2.3.4", "1.2.3.4 ", "1.2.3.4\n", "1.2.3.4\x00", "", "a",
          "1..2.3", "1.2.3.", "\u0661.2.3.4", "0x1.2.3.4", "1.2.3.4/32", "1.2.3.-4", "+1.2.3.4",
          "1.2.3.4%eth0", "::1", "fe80::1%eth0", "::ffff:1.2.3.4", "FD00::1", "1:2:3:4:5:6:7:8",
          "1::2::3", ":::", "0000.1.1.1", "00.1.1.1", "1.2.3.1000", ".1.2.3.4", "\u00b9.2.3.4"]

octets = st.sampled_from(["0", "00", "1", "01", "9", "99", "199", "255", "256", "300", "010",
                          "a", "", " 1", "1 ", "\u0663", "0001"])
dotted = st.lists(octets, min_size=1, max_size=6).map(".".join)


def expected(text: str) -> tuple[int, int, str] | None:
    ip = parse_ip(text)
    return None if ip is None else (ip.version, int(ip), str(ip))


def test_tricky_texts() -> None:
    for text in TRICKY:
        assert address_key(text) == expected(text), repr(text)


@settings(max_examples=500, deadline=None)
@given(st.one_of(dotted, st.text(max_size=20)))
def test_any_text(text: str) -> None:
    assert address_key(text) == expected(text)


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_every_address_sorts_as_ipaddress_does(ip: object) -> None:
    key = address_key(str(ip))
    assert key == expected(str(ip))

"""DNS Cookies: SipHash-2-4 against the reference vectors, server cookies against RFC 9018
Appendix A, the validity window, the reuse/refresh rule and malformed options."""

from __future__ import annotations

import pytest

from gslb import cookies as ck
from gslb.cookies import (CACHE_PERIOD, FUTURE, LIFETIME, REFRESH, REUSE, Cookies, Verdict, hash_matches,
                          parse_secret, server_cookie, siphash24, siphash24_py)

# SipHash-2-4 reference vectors (the SipHash paper's vectors.h): key 00..0f, message 00..(n-1)
SIPHASH_VECTORS = """
310e0edd47db6f72 fd67dc93c539f874 5a4fa9d909806c0d 2d7efbd796666785 b7877127e09427cf 8da699cd64557618
cee3fe586e46c9cb 37d1018bf50002ab 6224939a79f5f593 b0e4a90bdf82009e f3b9dd94c5bb5d7a a7ad6b22462fb3f4
fbe50e86bc8f1e75 903d84c02756ea14 eef27a8e90ca23f7 e545be4961ca29a1 db9bc2577fcc2a3f 9447be2cf5e99a69
9cd38d96f0b3c14b bd6179a71dc96dbb 98eea21af25cd6be c7673b2eb0cbf2d0 883ea3e395675393 c8ce5ccd8c030ca8
94af49f6c650adb8 eab8858ade92e1bc f315bb5bb835d817 adcf6b0763612e2f a5c91da7acaa4dde 716595876650a2a6
28ef495c53a387ad 42c341d8fa92d832 ce7cf2722f512771 e37859f94623f3a7 381205bb1ab0e012 ae97a10fd434e015
b4a31508beff4d31 81396229f0907902 4d0cf49ee5d4dcca 5c73336a76d8bf9a d0a704536ba93e0e 925958fcd6420cad
a915c29bc8067318 952b79f3bc0aa6d4 f21df2e41d4535f9 87577519048f53a9 10a56cf5dfcd9adb eb75095ccd986cd0
51a9cb9ecba312e6 96afadfc2ce666c7 72fe52975a4364ee 5a1645b276d592a1 b274cb8ebf87870a 6f9bb4203de7b381
eaecb2a30b22a87f 9924a43cc1315724 bd838d3aafbf8db7 0b1a2a3265d51aea 135079a3231ce660 932b2846e4d70666
e1915f5cb1eca46c f325965ca16d629f 575ff28e60381be5 724506eb4c328a95
""".split()

SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")


def option(hex_data: str) -> bytes:
    """A reply's COOKIE option as ``Cookies.process`` returns it: code 10, length, data."""
    data = bytes.fromhex(hex_data)
    return b"\x00\x0a" + len(data).to_bytes(2, "big") + data


@pytest.mark.parametrize("impl", [siphash24, siphash24_py], ids=["active", "pure-python"])
def test_siphash24_reference_vectors(impl):
    assert len(SIPHASH_VECTORS) == 64
    key = bytes(range(16))
    for n, expected in enumerate(SIPHASH_VECTORS):
        assert impl(key, bytes(range(n))).hex() == expected, n


def test_the_c_and_python_siphash_agree_on_every_length():
    key = bytes(range(3, 19))
    for n in range(80):
        data = bytes((i * 37 + n) & 0xFF for i in range(n))
        assert siphash24(key, data) == siphash24_py(key, data)


# RFC 9018 Appendix A, byte for byte
def test_rfc9018_a1_learning_a_new_server_cookie():
    assert server_cookie(SECRET, bytes.fromhex("2464c4abcf10c957"), ck.address_bytes("198.51.100.100"),
                         1559731985).hex() == "010000005cf79f111f8130c3eee29480"
    verdict, reply, storable = Cookies(SECRET).process(bytes.fromhex("2464c4abcf10c957"), "198.51.100.100",
                                                       1559731985)
    assert verdict is Verdict.CLIENT_ONLY and storable
    assert reply == option("2464c4abcf10c957010000005cf79f111f8130c3eee29480")


def test_rfc9018_a2_the_same_client_renewing_after_40_minutes():
    query = bytes.fromhex("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
    verdict, reply, _ = Cookies(SECRET).process(query, "198.51.100.100", 1559734385)
    assert verdict is Verdict.VALID  # 40 minutes old: valid, and older than half an hour: renewed
    assert reply == option("2464c4abcf10c957010000005cf7a871d4a564a1442aca77")


def test_rfc9018_a3_another_client_with_nonzero_reserved_bytes():
    query = bytes.fromhex("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5")
    address = ck.address_bytes("203.0.113.203")
    # the hash covers the reserved octets as received
    assert hash_matches(SECRET, query[:8], query[8:], address)
    assert not hash_matches(SECRET, query[:8], query[8:], ck.address_bytes("203.0.113.204"))
    verdict, reply, _ = Cookies(SECRET).process(query, "203.0.113.203", 1559734700)
    # the example answers 1 h 52 min after the cookie was made: beyond the hour we accept, so the
    # cookie counts as invalid here; the fresh cookie is the example's all the same
    assert verdict is Verdict.INVALID
    assert reply == option("fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e")
    verdict, _, _ = Cookies(SECRET).process(query, "203.0.113.203", 1559727985 + 600)
    assert verdict is Verdict.VALID


def test_rfc9018_a4_ipv6_with_a_rolled_over_secret():
    old = bytes.fromhex("dd3bdf9344b678b185a6f5cb60fca715")
    new = bytes.fromhex("445536bcd2513298075a5d379663c962")
    client = "2001:db8:220:1:59de:d0f4:8769:82b8"
    query = bytes.fromhex("22681ab97d52c298010000005cf7c57926556bd0934c72f8")
    address = ck.address_bytes(client)
    assert hash_matches(old, query[:8], query[8:], address)
    assert not hash_matches(new, query[:8], query[8:], address)
    verdict, reply, _ = Cookies(new).process(query, client, 1559741961)
    assert verdict is Verdict.INVALID  # made with the old secret: answered with a fresh one
    assert reply == option("22681ab97d52c298010000005cf7c609a6bb79d16625507a")
    assert Cookies(old).process(query, client, 1559741961)[0] is Verdict.VALID


NOW = 1_700_000_000
CLIENT = bytes.fromhex("0123456789abcdef")


def issued(age: int, client: str = "192.0.2.1", secret: bytes = SECRET) -> bytes:
    """A query's COOKIE option carrying the server cookie we made ``age`` seconds before NOW."""
    return CLIENT + server_cookie(secret, CLIENT, ck.address_bytes(client), NOW - age)


@pytest.mark.parametrize("age,verdict", [
    (0, Verdict.VALID), (LIFETIME, Verdict.VALID), (LIFETIME + 1, Verdict.INVALID),
    (-FUTURE, Verdict.VALID), (-FUTURE - 1, Verdict.INVALID), (2 ** 31 + 5, Verdict.INVALID),
])
def test_validity_window_one_hour_back_five_minutes_ahead(age, verdict):
    assert Cookies(SECRET).process(issued(age), "192.0.2.1", NOW)[0] is verdict


def test_serial_arithmetic_across_the_32_bit_wrap():
    now = 30  # 2106: the clock wrapped; a cookie made 100 s before it is 100 s old
    query = CLIENT + server_cookie(SECRET, CLIENT, ck.address_bytes("192.0.2.1"), now - 100)
    verdict, reply, _ = Cookies(SECRET).process(query, "192.0.2.1", now)
    assert verdict is Verdict.VALID and reply[4:] == query  # echoed


def test_a_young_cookie_is_echoed_an_old_one_renewed():
    cookies = Cookies(SECRET)
    young = issued(REUSE - 1)
    verdict, reply, storable = cookies.process(young, "192.0.2.1", NOW)
    assert verdict is Verdict.VALID and reply[4:] == young and storable
    assert REUSE + CACHE_PERIOD == REFRESH  # a cached echo is never older than half an hour
    for age in (REUSE, REFRESH, LIFETIME):
        verdict, reply, _ = cookies.process(issued(age), "192.0.2.1", NOW)
        assert verdict is Verdict.VALID
        assert reply[4:] == CLIENT + server_cookie(SECRET, CLIENT, ck.address_bytes("192.0.2.1"), NOW)


def test_a_cookie_in_its_last_minutes_is_valid_but_not_cached():
    assert Cookies(SECRET).process(issued(LIFETIME - CACHE_PERIOD), "192.0.2.1", NOW)[2] is True
    verdict, _, storable = Cookies(SECRET).process(issued(LIFETIME - CACHE_PERIOD + 1), "192.0.2.1", NOW)
    assert verdict is Verdict.VALID and storable is False


@pytest.mark.parametrize("why,data", [
    ("another address", issued(10, client="192.0.2.2")),
    ("another secret", issued(10, secret=bytes(16))),
    ("another client cookie", bytes(8) + issued(10)[8:]),
    ("version 2", CLIENT + b"\x02" + issued(10)[9:]),
    ("a short server cookie (8)", CLIENT + bytes(8)),
    ("a long server cookie (32)", CLIENT + issued(10)[8:] + bytes(16)),
    ("a flipped hash bit", issued(10)[:-1] + bytes([issued(10)[-1] ^ 1])),
])
def test_invalid_server_cookies_get_a_fresh_one(why, data):
    verdict, reply, _ = Cookies(SECRET).process(data, "192.0.2.1", NOW)
    assert verdict is Verdict.INVALID, why
    assert reply[4:] == data[:8] + server_cookie(SECRET, data[:8], ck.address_bytes("192.0.2.1"), NOW)


@pytest.mark.parametrize("size", [0, 1, 7, 9, 12, 15, 41, 64])
def test_malformed_lengths(size):
    assert Cookies(SECRET).process(bytes(size), "192.0.2.1", NOW) == (Verdict.MALFORMED, b"", False)


@pytest.mark.parametrize("size", [8, 16, 24, 40])
def test_well_formed_lengths(size):
    verdict, reply, _ = Cookies(SECRET).process(bytes(size), "192.0.2.1", NOW)
    assert verdict is not Verdict.MALFORMED and len(reply) == 4 + 24


def test_ipv6_and_ipv4_clients_hash_their_address_sizes():
    assert len(ck.address_bytes("2001:db8::1")) == 16 and len(ck.address_bytes("192.0.2.1")) == 4
    with pytest.raises(ValueError):
        ck.address_bytes("not-an-address")


def test_the_clock_is_used_when_no_time_is_given():
    cookies = Cookies(SECRET, clock=lambda: NOW + 0.9)
    _, reply, _ = cookies.process(CLIENT, "192.0.2.1")
    assert reply[4:] == CLIENT + server_cookie(SECRET, CLIENT, ck.address_bytes("192.0.2.1"), NOW)


@pytest.mark.parametrize("text,message", [
    ("00" * 15, "got 30 characters"),
    ("00" * 17, "got 34 characters"),
    ("g" * 32, "not a hex digit"),
    ("", "got 0 characters"),
])
def test_parse_secret_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_secret(text)


def test_parse_secret_ignores_whitespace_and_case():
    assert parse_secret(" E5E973E5a6b2a43f\n48e7dc849e37bfcf\n") == SECRET
    with pytest.raises(ValueError):
        Cookies(bytes(15))

"""Property tests of the query path on hostile input (hypothesis; tools/fuzz runs the same checks
for millions of inputs).

For any byte string up to 512 bytes, and for structure-aware variations of valid queries (random
flags, opcodes, types and classes, EDNS options, ECS with random family, prefixes and address
bytes, TSIG records, records in the wrong sections, cut or extended packets):

- no exception escapes ``wire.parse_query`` (other than its own Drop/FormErr/Reject),
  ``QueryHandler.udp`` or ``QueryHandler.handle``, and gslb logs no error (the handler turns an
  internal exception into SERVFAIL or a drop and logs it: that would be a bug here);
- a reply, if any, parses with dnspython, has QR set and carries the query's ID (the packet has
  at least 2 bytes whenever there is a reply: shorter ones are dropped);
- a UDP reply never exceeds what the client may receive: 512 bytes without EDNS, else
  min(advertised size (at least 512), 1232); TCP replies fit in 65535;
- an ECS option is accepted exactly when RFC 7871 says it is well formed, and then echoed with
  the same family, source prefix and address and a scope no longer than the address.

The runs are deterministic (``derandomize``, no example database), so CI cannot flake.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import struct
import sys
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gslb import wire

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fuzz"


def _load_tool():
    loader = importlib.machinery.SourceFileLoader("gslb_fuzz_tool", str(TOOL))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


fuzz = _load_tool()

PROPERTY = settings(max_examples=1000, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = fuzz.Env(tmp_path_factory.mktemp("fuzz"))
    yield e
    e.close()


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def errors():
    handler = Errors()
    logger = logging.getLogger("gslb")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def client_limit(data: bytes) -> int:
    """512 without EDNS, else min(max(advertised, 512), 1232); 1232 if dnspython cannot read the query."""
    try:
        query = dns.message.from_wire(fuzz.as_generic(data), keyring=False)
    except Exception:
        return 1232
    return 512 if query.edns < 0 else min(max(query.payload, 512), 1232)


def assert_reply(data: bytes, reply: bytes | None, limit: int):
    if reply is None:
        return None
    assert len(reply) <= limit, (len(reply), limit, data.hex())
    message = dns.message.from_wire(fuzz.as_generic(reply), keyring=False)
    assert len(data) >= 2 and message.id == int.from_bytes(data[:2], "big"), data.hex()
    assert message.flags & 0x8000
    return message


def assert_path(env, errors, data: bytes, host: str = "81.2.69.160"):
    """``data`` through udp() and handle(tcp=True): the properties of the module docstring."""
    udp = env.handler.udp(data, host)
    tcp = env.handler.handle(data, host, True)
    assert not errors.records, [r.getMessage() for r in errors.records]
    message = assert_reply(data, udp, 512 if udp is None or len(udp) <= 512 else client_limit(data))
    assert_reply(data, tcp, 65535)
    return message


# -------------------------------------------------------------------------------- strategies

names = st.sampled_from(fuzz.NAMES).flatmap(
    lambda n: st.lists(st.booleans(), min_size=len(n), max_size=len(n)).map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(n, up))))
wire_names = st.one_of(
    names.map(fuzz.name_wire),
    st.lists(st.binary(min_size=1, max_size=63), min_size=1, max_size=5).map(
        lambda labels: b"".join(bytes([len(x)]) + x for x in labels) + b"\0"),
    st.sampled_from([b"\0", b"\xc0\x0c", b"\x03www\xc0\x0c", b"\x40abc\0", b"\x80\0", b"\x03www",
                     (b"\x3f" + b"a" * 63) * 4 + b"\0"]),
)
qtypes = st.one_of(st.sampled_from(fuzz.TYPES), st.integers(0, 65535))
qclasses = st.one_of(st.sampled_from(fuzz.CLASSES), st.integers(0, 65535))


@st.composite
def ecs_options(draw, valid: bool | None = None):
    """(option bytes, well formed?) for an ECS option with random family, prefixes and address."""
    family = draw(st.sampled_from([1, 2, 1, 2, 0, 3, 65535]))
    width = {1: 32, 2: 128}.get(family, 32)
    source = draw(st.one_of(st.integers(0, width), st.integers(0, 255)))
    scope = draw(st.one_of(st.just(0), st.integers(0, 255)))
    need = (source + 7) // 8
    address = draw(st.one_of(st.binary(min_size=need, max_size=need), st.binary(max_size=17)))
    well_formed = (family in (1, 2) and source <= width and scope == 0 and len(address) == need
                   and not (source % 8 and address[-1] & (0xFF >> (source % 8))))
    body = struct.pack("!HBB", family, source, scope) + address
    return struct.pack("!HH", 8, len(body)) + body, well_formed


edns_options = st.one_of(
    ecs_options().map(lambda o: o[0]),
    st.tuples(st.integers(0, 65535), st.binary(max_size=40)).map(
        lambda t: struct.pack("!HH", t[0], len(t[1])) + t[1]),
    st.binary(min_size=1, max_size=8),  # a cut option header or garbage
)


@st.composite
def opt_records(draw):
    options = b"".join(draw(st.lists(edns_options, max_size=3)))
    payload = draw(st.one_of(st.sampled_from([0, 511, 512, 513, 1232, 1233, 4096, 65535]), st.integers(0, 65535)))
    version = draw(st.sampled_from([0, 0, 0, 1, 255]))
    ttl = (draw(st.sampled_from([0, 0, 1, 255])) << 24) | (version << 16) | (0x8000 if draw(st.booleans()) else 0)
    owner = draw(st.sampled_from([b"\0", b"\0", b"\0", b"\x01x\0"]))
    return owner + struct.pack("!HHIH", 41, payload, ttl, len(options)) + options


@st.composite
def tsig_records(draw):
    algorithm = draw(st.sampled_from([b"\x0bhmac-sha256\0", b"\0", b"\x03abc"]))
    mac = draw(st.binary(max_size=40))
    other = draw(st.binary(max_size=8))
    rdata = (algorithm + bytes(6) + struct.pack("!H", 300) + struct.pack("!H", len(mac)) + mac
             + struct.pack("!HHH", draw(st.integers(0, 65535)), draw(st.sampled_from([0, 16, 17])), len(other)) + other)
    rdata = rdata[:draw(st.integers(0, len(rdata)))] if draw(st.booleans()) and draw(st.booleans()) else rdata
    owner = draw(st.sampled_from([b"\x03key\0", b"\0", b"\xc0\x0c"]))
    return owner + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata


other_records = st.tuples(st.sampled_from([b"\0", b"\xc0\x0c", b"\x03www\0", b"\xc0\xff"]), qtypes,
                          st.binary(max_size=20)).map(
    lambda t: t[0] + struct.pack("!HHIH", t[1], 1, 60, len(t[2])) + t[2])


@st.composite
def structured_queries(draw):
    """A header and question with random bits, then random records; sometimes cut or extended."""
    opcode = draw(st.sampled_from([0, 0, 0, 0, 1, 2, 4, 5, 6, 15]))
    flags = (opcode << 11) | (draw(st.integers(0, 0xFFFF)) & 0x87FF if draw(st.booleans()) else 0x0100)
    if draw(st.integers(0, 9)):
        flags &= 0x7FFF
    qdcount = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
    question = b"".join(draw(wire_names) + struct.pack("!HH", draw(qtypes), draw(qclasses)) for _ in range(qdcount))
    answer = draw(st.lists(other_records, max_size=2))
    authority = draw(st.lists(st.one_of(other_records, opt_records()), max_size=1))
    additional = draw(st.lists(st.one_of(opt_records(), opt_records(), tsig_records(), other_records), max_size=3))
    counts = [qdcount, len(answer), len(authority), len(additional)]
    if not draw(st.integers(0, 9)):
        counts[draw(st.integers(0, 3))] = draw(st.sampled_from([0, 1, 2, 255, 65535]))
    data = (struct.pack("!HHHHHH", draw(st.integers(0, 65535)), flags, *counts) + question
            + b"".join(answer) + b"".join(authority) + b"".join(additional))
    tail = draw(st.sampled_from(["keep", "keep", "keep", "cut", "extend"]))
    if tail == "cut":
        data = data[:draw(st.integers(0, len(data)))]
    elif tail == "extend":
        data += draw(st.binary(min_size=1, max_size=32))
    return data[:512]


hosts = st.sampled_from(fuzz.HOSTS)


# -------------------------------------------------------------------------------- properties

@PROPERTY
@given(st.binary(max_size=512))
def test_parse_query_raises_only_its_own_outcomes(data):
    try:
        ident, query = wire.parse_query(data)
    except wire.Drop:
        assert len(data) < 12 or data[2] & 0x80
        return
    except wire.Reject as e:  # FormErr included
        assert_reply(data, e.reply, 512)
        return
    assert ident == int.from_bytes(data[:2], "big") and query.qname.endswith(".")


@PROPERTY
@given(st.binary(max_size=512), hosts)
def test_any_bytes_through_the_answer_path(env, errors, data, host):
    assert_path(env, errors, data, host)


@PROPERTY
@given(structured_queries(), hosts)
def test_structured_queries_through_the_answer_path(env, errors, data, host):
    assert_path(env, errors, data, host)


@PROPERTY
@given(st.integers(0, 65535), names, st.sampled_from([1, 28, 16, 255]), ecs_options(),
       st.integers(512, 4096), hosts)
def test_ecs_is_accepted_exactly_when_well_formed_and_echoed(env, errors, ident, name, qtype, ecs, payload, host):
    option, well_formed = ecs
    data = (struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 1) + fuzz.name_wire(name) + struct.pack("!HH", qtype, 1)
            + b"\0" + struct.pack("!HHIH", 41, payload, 0, len(option)) + option)
    message = assert_path(env, errors, data, host)
    assert message is not None  # every name here is answered (pool names too: the pools are ready)
    if not well_formed:
        assert message.rcode() == dns.rcode.FORMERR
        return
    assert message.rcode() != dns.rcode.FORMERR
    (echo,) = [o for o in message.options if o.otype == dns.edns.ECS]
    sent = dns.message.from_wire(data).options[0]
    assert (echo.family, echo.srclen, echo.address) == (sent.family, sent.srclen, sent.address)
    assert echo.scopelen <= (32 if sent.family == 1 else 128)


@settings(PROPERTY, max_examples=500)
@given(st.integers(0, 2 ** 32))
def test_the_fuzzers_generators_pass(env, errors, seed):
    """The tool's own generators (structured, valid, mutated valid queries) under the same checks."""
    import random

    rng = random.Random(seed)
    for data in (fuzz.structured(rng)[:512], fuzz.valid_query(rng),
                 fuzz.mutate(rng, fuzz.valid_query(rng), [fuzz.structured(rng)], 512)):
        assert_path(env, errors, data, fuzz.HOSTS[seed % len(fuzz.HOSTS)])

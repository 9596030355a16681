"""The wire format: every request and response round-trips; every malformed one is refused
with its errno, and nothing but ProtocolError ever comes out of a parser."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vbusfs_vdisk import protocol as p

SECTORS = st.integers(0, 1 << 20).map(lambda n: n * p.SECTOR)
TAGS = st.integers(0, p.U64_MAX)


@given(tag=TAGS, offset=SECTORS, length=SECTORS.filter(lambda n: n <= 1 << 20))
def test_a_read_request_round_trips(tag, offset, length):
    parsed = p.parse_request(p.read_request(tag, offset, length))
    assert parsed[:4] == (p.READ, tag, offset, length)
    assert parsed.payload.nbytes == 0


@given(tag=TAGS, offset=SECTORS, sectors=st.integers(0, 4), fill=st.binary(min_size=1, max_size=1))
def test_a_write_request_carries_its_data(tag, offset, sectors, fill):
    data = fill * (sectors * p.SECTOR)
    message = p.write_request(tag, offset, data)
    assert len(message) == p.REQUEST_SIZE + len(data)
    parsed = p.parse_request(message)
    assert parsed[:4] == (p.WRITE, tag, offset, len(data))
    assert bytes(parsed.payload) == data


def test_the_header_layout_is_fixed():
    message = p.pack_request(p.WRITE, 0x1122334455667788, 1024, 512, bytes(512))
    assert message[:24] == bytes.fromhex("887766554433221100040000000000000002000002000000")
    assert p.pack_response(7, errno.EROFS) == struct.pack("<QII", 7, errno.EROFS, 0)


def test_into_forms_write_the_same_bytes():
    buffer = bytearray(64)
    assert p.pack_request_into(buffer, p.READ, 9, 4096, 512) == p.REQUEST_SIZE
    assert bytes(buffer[: p.REQUEST_SIZE]) == p.read_request(9, 4096, 512)
    assert p.pack_response_into(buffer, 9, 0, 3) == p.RESPONSE_SIZE + 3
    assert bytes(buffer[: p.RESPONSE_SIZE]) == p.pack_response(9, 0, b"abc")[: p.RESPONSE_SIZE]


def header(tag=5, offset=0, length=0, op=p.READ, flags=0) -> bytes:
    return p.REQUEST.pack(tag, offset, length, op, flags)


@pytest.mark.parametrize(
    ("message", "code", "tag"),
    [
        (b"", errno.EINVAL, 0),
        (header()[:-1], errno.EINVAL, 0),
        (header(flags=1), errno.EINVAL, 5),
        (header(op=0), errno.EOPNOTSUPP, 5),
        (header(op=4), errno.EOPNOTSUPP, 5),
        (header(op=0xFFFF) + b"x", errno.EOPNOTSUPP, 5),
        (header(length=512) + bytes(512), errno.EINVAL, 5),  # a READ with data
        (header(op=p.WRITE, length=512) + bytes(511), errno.EINVAL, 5),
        (header(op=p.WRITE, length=512) + bytes(513), errno.EINVAL, 5),
        (header(op=p.WRITE, length=0) + bytes(512), errno.EINVAL, 5),
        (header(offset=1, length=512), errno.EINVAL, 5),
        (header(offset=512, length=100), errno.EINVAL, 5),
        (header(op=p.WRITE, offset=256, length=512) + bytes(512), errno.EINVAL, 5),
        (header(op=p.FLUSH, offset=512), errno.EINVAL, 5),
        (header(op=p.FLUSH, length=512), errno.EINVAL, 5),
        (header(op=p.FLUSH) + b"\0", errno.EINVAL, 5),
    ],
    ids=[
        "empty",
        "short-header",
        "flags",
        "op-0",
        "op-4",
        "op-max-with-data",
        "read-with-data",
        "write-short",
        "write-long",
        "write-zero-length-with-data",
        "misaligned-offset",
        "misaligned-length",
        "misaligned-write",
        "flush-offset",
        "flush-length",
        "flush-with-data",
    ],
)
def test_a_malformed_request_is_refused_with_its_errno(message, code, tag):
    with pytest.raises(p.ProtocolError) as refused:
        p.parse_request(message)
    assert (refused.value.errno, refused.value.tag) == (code, tag)
    assert errno.errorcode[code] in str(refused.value)


@given(st.binary(max_size=80))
def test_any_bytes_parse_or_are_refused_never_anything_else(message):
    try:
        parsed = p.parse_request(message)
    except p.ProtocolError as exc:
        assert exc.errno in (errno.EINVAL, errno.EOPNOTSUPP)
    else:
        assert parsed.op in p.OPS
        assert len(message) == p.REQUEST_SIZE + parsed.payload.nbytes


@given(st.binary(max_size=64))
def test_any_bytes_as_a_response_parse_or_give_eproto(message):
    try:
        parsed = p.parse_response(message)
    except p.ProtocolError as exc:
        assert exc.errno == errno.EPROTO
    else:
        assert p.pack_response(parsed.tag, parsed.status, bytes(parsed.data)) == message


def test_responses_round_trip_and_errors_carry_no_data():
    parsed = p.parse_response(p.pack_response(3, 0, b"abc"))
    assert (parsed.tag, parsed.status, bytes(parsed.data)) == (3, 0, b"abc")
    with pytest.raises(p.ProtocolError):
        p.parse_response(p.RESPONSE.pack(3, errno.EIO, 1) + b"x")
    with pytest.raises(p.ProtocolError):
        p.parse_response(p.RESPONSE.pack(3, 0, 2) + b"x")


def test_capacity_round_trips_and_refuses_a_wrong_length():
    capacity = p.Capacity(1 << 40, 512, True)
    assert p.parse_capacity(p.pack_capacity(capacity)) == capacity
    assert p.parse_capacity(p.pack_capacity(p.Capacity(512, 512, False))).readonly is False
    with pytest.raises(p.ProtocolError) as refused:
        p.parse_capacity(b"\0" * 15)
    assert refused.value.errno == errno.EPROTO


def test_fields_that_do_not_fit_are_a_callers_bug():
    with pytest.raises(ValueError):
        p.pack_request(p.READ, -1)
    with pytest.raises(ValueError):
        p.pack_request(p.READ, 0, 0, 1 << 32)
    with pytest.raises(ValueError):
        p.pack_request(1 << 16, 0)

"""A client's bookkeeping: tags count up, responses must answer the oldest request, and a
response that does not is refused (EPROTO) and leaves the requests in flight as they were."""

from __future__ import annotations

import errno

import pytest
from vbusfs_vdisk import Pipeline
from vbusfs_vdisk import protocol as p


def test_tags_count_up_and_completions_carry_what_was_asked():
    pipeline = Pipeline()
    first = pipeline.request(p.READ, 512, 512)
    second = pipeline.request(p.WRITE, 1024, 512, b"\x01" * 512)
    assert p.parse_request(first)[:4] == (p.READ, 1, 512, 512)
    assert p.parse_request(second)[:4] == (p.WRITE, 2, 1024, 512)
    assert len(pipeline) == 2 and pipeline.last_tag == 2
    done = pipeline.response(p.pack_response(1, 0, b"\x07" * 512))
    assert (done.tag, done.op, done.offset, done.status, bytes(done.data)) == (
        1,
        p.READ,
        512,
        0,
        b"\x07" * 512,
    )
    refused = pipeline.response(p.pack_response(2, errno.EROFS))
    assert refused.status == errno.EROFS
    with pytest.raises(OSError) as raised:
        refused.check()
    assert raised.value.errno == errno.EROFS and "WRITE at 1024" in str(raised.value)
    assert len(pipeline) == 0


@pytest.mark.parametrize(
    "response",
    [
        b"",
        p.pack_response(1)[:-1],  # short header
        p.pack_response(2),  # answers the second request, not the first
        p.pack_response(1, 0, b"x"),  # data for a FLUSH
        p.RESPONSE.pack(1, 0, 8) + b"short",  # fewer bytes than it says
        p.RESPONSE.pack(1, errno.EIO, 1) + b"x",  # an error with data
    ],
    ids=["empty", "short", "wrong-tag", "data-for-flush", "truncated", "error-with-data"],
)
def test_a_response_that_does_not_fit_is_refused_and_changes_nothing(response):
    pipeline = Pipeline()
    pipeline.request(p.FLUSH)
    pipeline.request(p.FLUSH)
    with pytest.raises(p.ProtocolError) as refused:
        pipeline.response(response)
    assert refused.value.errno == errno.EPROTO
    assert len(pipeline) == 2
    assert pipeline.response(p.pack_response(1)).tag == 1


def test_a_response_with_nothing_in_flight_is_refused():
    with pytest.raises(p.ProtocolError) as refused:
        Pipeline().response(p.pack_response(1))
    assert refused.value.errno == errno.EPROTO


def test_a_request_never_sent_is_forgotten_and_its_tag_reused():
    pipeline = Pipeline()
    pipeline.request(p.READ, 0, 512)
    pipeline.forget_last()
    assert len(pipeline) == 0
    assert p.parse_request(pipeline.request(p.READ, 0, 512)).tag == 1


def test_fields_that_do_not_fit_raise_valueerror_and_are_not_in_flight():
    pipeline = Pipeline()
    with pytest.raises(ValueError):
        pipeline.request(p.READ, -512, 512)
    with pytest.raises(ValueError):
        pipeline.request(p.READ, 0, 1 << 32)
    assert len(pipeline) == 0

"""The pure pid views: identity, blind, and a table, against the PidView contract."""

from __future__ import annotations

import errno

import pytest

from vbusfs.model import (
    BLIND,
    PID_MAX_LIMIT,
    IdentityView,
    NotSupported,
    PidView,
    TableView,
    plausible_pid,
)


def test_plausible_pid_is_one_to_the_kernel_limit():
    assert [plausible_pid(p) for p in (-1, 0, 1, PID_MAX_LIMIT, PID_MAX_LIMIT + 1)] == [
        False,
        False,
        True,
        True,
        False,
    ]


def test_identity_view_maps_every_pid_to_itself():
    view: PidView = IdentityView(own=42)
    assert view.own == 42
    assert [view.inward(p) for p in (1, 42, 7000)] == [1, 42, 7000]
    assert [view.outward(p) for p in (1, 42, 7000)] == [1, 42, 7000]


@pytest.mark.parametrize("pid", [0, -5, PID_MAX_LIMIT + 1, 2**32 + 1])
def test_identity_view_refuses_what_cannot_be_a_pid(pid):
    # 2**32 + 1 must not wrap to pid 1 on its way to the kernel
    assert IdentityView(1).inward(pid) is None
    assert IdentityView(1).outward(pid) is None


def test_blind_view_sees_nothing():
    view: PidView = BLIND
    assert view.own is None
    assert [view.inward(p) for p in (1, 2, 300)] == [None, None, None]
    assert [view.outward(p) for p in (1, 2, 300)] == [None, None, None]


def test_table_view_translates_both_ways_and_hides_the_rest():
    view: PidView = TableView(own=1, inner={1: 9001, 2: 9002})
    assert (view.own, view.inward(1), view.inward(2), view.inward(3)) == (1, 9001, 9002, None)
    assert (view.outward(9002), view.outward(1), view.outward(9003)) == (2, None, None)


def test_table_view_refuses_two_pids_for_one_process():
    with pytest.raises(ValueError):
        TableView(own=None, inner={1: 9001, 2: 9001})


def test_not_supported_carries_eopnotsupp():
    assert NotSupported("no translation").errno == errno.EOPNOTSUPP

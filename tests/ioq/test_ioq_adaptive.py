"""Adaptive polling: a spin budget per handle (per poller), learned from how waits end."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio

from vbusfs.ioq import AsyncIoq, Ioq, Poller
from vbusfs.ioq._binding import SPIN_MAX_US

ROUNDS = 300


def echo_peer(dfds: Any, ufds: Any, rounds: int, delay: float, report: int) -> Callable[[], None]:
    """A device that answers each request after busy-waiting ``delay`` seconds, waiting
    adaptively itself, and reports the largest budget its waits learned."""

    def run() -> None:
        d = Ioq.attach(dfds, direction="to_south")
        u = Ioq.attach(ufds, direction="to_north")
        most = 0.0
        for _ in range(rounds):
            m = d.receive(timeout=10, spin_us="adaptive")
            end = time.perf_counter() + delay
            while time.perf_counter() < end:
                pass
            u.send(m, timeout=10)
            most = max(most, d.spin_budget_us)
        os.write(report, f"{most}\n".encode())

    return run


def ping(
    children: Any, delay: float, rounds: int, receive: Callable[[Ioq, Ioq], bytes]
) -> tuple[list[float], float]:
    """Budgets of the client's handle after each round trip, and the device's largest."""
    r, w = os.pipe()
    down = Ioq.create(4, 16, direction="to_south")
    up = Ioq.create(4, 16, direction="to_north")
    try:
        pid = children.fork(echo_peer(down.fds, up.fds, rounds, delay, w))
        budgets = []
        for i in range(rounds):
            down.send(i.to_bytes(4, "little"), timeout=10)
            assert receive(down, up) == i.to_bytes(4, "little")
            budgets.append(up.spin_budget_us)
        assert children.wait(pid) == 0
        return budgets, float(os.read(r, 100))
    finally:
        down.close()
        up.close()
        os.close(r)
        os.close(w)


def test_adaptive_budget_grows_for_a_peer_that_answers_fast_on_both_sides(
    children: Any,
) -> None:
    budgets, device_most = ping(
        children, 0.00002, ROUNDS, lambda _, up: up.receive(timeout=10, spin_us="adaptive")
    )
    assert budgets[0] <= 10  # it starts at 0 and grows a step at a time
    assert max(budgets) > 0, "a 20 us peer never taught the client to spin"
    assert max(budgets) <= SPIN_MAX_US == 200
    assert 0 < device_most <= SPIN_MAX_US, "the device side learned nothing"


def test_adaptive_budget_falls_to_zero_for_a_slow_peer(children: Any) -> None:
    budgets, _ = ping(children, 0.003, 40, lambda _, up: up.receive(timeout=10, spin_us="adaptive"))
    # every answer comes after the 200 us bound: each wait halves the budget
    assert budgets[-1] == 0
    assert max(budgets) <= 10


def test_a_wait_without_adaptive_learns_nothing(children: Any) -> None:
    budgets, _ = ping(children, 0.00002, 50, lambda _, up: up.receive(timeout=10, spin_us=50))
    assert set(budgets) == {0}


def test_adaptive_poller_learns_a_budget_of_its_own(children: Any) -> None:
    seen: list[float] = []
    with Poller(adaptive=True) as poller:

        def receive(_: Ioq, up: Ioq) -> bytes:
            if not len(poller):
                poller.add(up, "receive")
            poller.wait(timeout=10)
            seen.append(poller.spin_budget_us)
            return up.receive_nowait()

        budgets, _ = ping(children, 0.00002, ROUNDS, receive)
    assert 0 < max(seen) <= SPIN_MAX_US
    assert set(budgets) == {0}  # the ring's own budget: its own waits never ran
    assert Poller(spin_us="adaptive").spin_budget_us == 0


def test_adaptive_trio_waits_learn_through_their_disarm(children: Any) -> None:
    r, w = os.pipe()
    down = Ioq.create(4, 16, direction="to_south")
    up = AsyncIoq.create(4, 16, direction="to_north")
    try:
        pid = children.fork(echo_peer(down.fds, up.fds, ROUNDS, 0.00002, w))
        seen: list[float] = []
        poller_seen: list[float] = []

        async def main() -> None:
            with Poller(adaptive=True) as poller:
                poller.add(up, "receive")
                for i in range(ROUNDS):
                    down.send(i.to_bytes(4, "little"), timeout=10)
                    with trio.fail_after(10):
                        if i % 2:
                            await up.wait_receivable(spin_us="adaptive")
                        else:
                            await poller.wait_async()
                    assert up.receive_nowait() == i.to_bytes(4, "little")
                    seen.append(up.spin_budget_us)
                    poller_seen.append(poller.spin_budget_us)

        trio.run(main)
        assert children.wait(pid) == 0
        assert 0 < max(seen) <= SPIN_MAX_US
        assert 0 < max(poller_seen) <= SPIN_MAX_US
    finally:
        down.close()
        up.close()
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("bad", [-1, "fast", 1.5, True])
def test_spin_us_refuses_anything_but_an_int_or_adaptive(bad: object) -> None:
    with Ioq.create(2, 8) as north, Ioq.attach(north.fds, direction="to_south") as south:
        with pytest.raises(ValueError):
            south.wait_receivable(timeout=0, spin_us=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            south.receive(timeout=0, spin_us=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            north.send(b"x", timeout=0, spin_us=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            Poller(spin_us=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Poller(spin_us=5, adaptive=True)

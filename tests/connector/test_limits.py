"""The connector's log budget, with a clock the test turns (no daemon)."""

from __future__ import annotations

from vbusfs.connector import Limits
from vbusfs.connector._limits import LogBudget, LogBudgets


def test_log_budget_lets_a_burst_through_then_a_rate_and_counts_the_rest():
    budget = LogBudget(rate=2.0, burst=3)
    assert [budget.take(0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert budget.take(0.4) is None  # 0.8 of a line earned: still held back
    assert budget.take(0.5) == 3  # a whole line: it says three were held back
    assert budget.take(0.5) is None
    assert budget.take(10.0) == 1  # the bucket refills to its burst, no more
    assert [budget.take(10.0) for _ in range(3)] == [0, 0, None]


def test_log_budgets_hold_back_per_client_and_in_total():
    budgets = LogBudgets(Limits(log_rate=1.0, log_burst=2, log_rate_total=1.0, log_burst_total=3))
    assert [budgets.take(1, 0.0) for _ in range(3)] == [(0, 0), (0, 0), None]
    # another client still has its own budget, until the total runs out
    assert [budgets.take(2, 0.0) for _ in range(2)] == [(0, 0), None]
    assert budgets.take(2, 1.0) == (1, 1)


def test_log_budgets_forget_the_least_recently_heard_clients():
    budgets = LogBudgets(keep=3)
    for pid in range(10):
        budgets.take(pid, 0.0)
    assert list(budgets._each) == [7, 8, 9]


def test_the_total_cap_refuses_with_eagain_and_serves_again_once_one_leaves(tmp_path):
    """An in-process connector with a cap of 2 (the daemon's is 256: the same code)."""
    import errno
    import json
    import socket

    import trio

    from vbusfs.connector import Connector
    from vbusfs.testing import host_free_model

    path = str(tmp_path / "connector.sock")

    def no_class(name: str) -> type:
        raise ImportError(name)

    connector = Connector(host_free_model(), path, no_class, Limits(connections=2))

    async def hello() -> tuple[trio.socket.SocketType, dict]:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        await sock.connect(path)
        return sock, json.loads(await sock.recv(65536))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(connector.serve)
            with trio.fail_after(5):
                first, welcome = await hello()
                second, _ = await hello()
                assert welcome["hello"]["admin"]  # this process is the daemon's owner
                third, refusal = await hello()
                assert refusal == {
                    "errno": errno.EAGAIN,
                    "message": "too many connections (at most 2)",
                }
                third.close()
                first.close()
                while connector.clients > 1:
                    await trio.sleep(0.01)
                again, welcome = await hello()
                assert "hello" in welcome
                for sock in (second, again):
                    sock.close()
            nursery.cancel_scope.cancel()

    trio.run(main)

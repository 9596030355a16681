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

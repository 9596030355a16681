"""What the connector grants one client and all of them, and how often it speaks of them.

Pure data and arithmetic (the caller passes the clock): no I/O, no trio, no os.
The numbers are the contract of docs/behaviour.md §7.1.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Limits:
    """The connector's caps; a connection over one is refused (EAGAIN) with a reason."""

    #: connections open at once, all clients together
    connections: int = 256
    #: connections open at once by the processes of one uid
    connections_per_uid: int = 64
    #: log lines about one client's faults: `log_burst` at once, then `log_rate` a second
    log_rate: float = 2.0
    log_burst: int = 5
    #: log lines about client faults from every client together
    log_rate_total: float = 10.0
    log_burst_total: int = 20
    #: seconds between re-checks of a connected process's bus while it sends nothing
    recheck_interval: float = 0.5
    #: seconds a stopped device loop (thread or worker) may take to end: then a thread
    #: is abandoned and a worker process SIGKILLed
    join_bound: float = 2.0


@dataclass(slots=True)
class LogBudget:
    """A token bucket for log lines: `burst` at once, then `rate` a second.

    `take(now)` is None when a line must be held back (and counts it), otherwise the
    number of lines held back since the last one let through, for that line to say.
    """

    rate: float
    burst: int
    tokens: float = -1.0
    last: float | None = None
    held_back: int = 0

    def take(self, now: float) -> int | None:
        if self.last is None:
            self.tokens = float(self.burst)
        else:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            self.held_back += 1
            return None
        self.tokens -= 1.0
        held, self.held_back = self.held_back, 0
        return held


@dataclass(slots=True)
class LogBudgets:
    """One `LogBudget` per client key (a pid) and one for all of them together.

    At most `keep` keys are remembered (the least recently heard is forgotten), so
    a stream of short-lived clients cannot grow it without bound.
    """

    limits: Limits = field(default_factory=Limits)
    keep: int = 4096
    _each: OrderedDict[int, LogBudget] = field(default_factory=OrderedDict)
    _total: LogBudget | None = None

    def take(self, key: int, now: float) -> tuple[int, int] | None:
        """None: hold this line back; else (held back for `key`, held back in total)."""
        budget = self._each.pop(key, None)
        if budget is None:
            budget = LogBudget(self.limits.log_rate, self.limits.log_burst)
        self._each[key] = budget
        while len(self._each) > self.keep:
            self._each.popitem(last=False)
        if self._total is None:
            self._total = LogBudget(self.limits.log_rate_total, self.limits.log_burst_total)
        mine = budget.take(now)
        if mine is None:
            return None
        total = self._total.take(now)
        if total is None:
            budget.held_back += 1  # still this client's line, held back by the total
            return None
        return mine, total

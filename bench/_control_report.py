"""The report of bench/control.py: rates per operation, and how costs grow with scale."""

from __future__ import annotations

from _control_measure import DEVICES_PER_BUS, KINDS, OPS, Results

# A vbusfs scale ratio above this (and above the minimal filesystem's own) is flagged.
GROWTH_LIMIT = 1.3


def _rate(seconds: float | None) -> str:
    if seconds is None or seconds <= 0:
        return "-"
    rate = 1 / seconds
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    return f"{a / b:.2f}" if a / b < 100 else f"{a / b:,.0f}"


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:,.1f}"


def print_rates(results: Results, scale: int) -> None:
    buses = scale // DEVICES_PER_BUS
    entries = results.entries[scale]
    print(f"\n{scale:,} devices on {buses:,} buses: ops/s of the best turn "
          f"(listings: listings/s of {entries:,} entries)")  # fmt: skip
    print(f"  {'operation':<23}{'vbusfs':>10}{'minimal':>10}{'tmpfs':>11}{'vbusfs us':>12}"
          f"{'vbus/minimal':>14}{'vbus/tmpfs':>12}{'before':>10}{'speedup':>9}")  # fmt: skip
    for op in OPS:
        v, m, t, b = (results.best(kind, scale, op.key) for kind in KINDS)
        print(f"  {op.label:<23}{_rate(v):>10}{_rate(m):>10}{_rate(t):>11}{_us(v):>12}"
              f"{_ratio(v, m):>14}{_ratio(v, t):>12}{_rate(b):>10}{_ratio(b, v):>9}")  # fmt: skip
    print("  (vbus/minimal, vbus/tmpfs: cost of one vbusfs operation over the peer's;")
    print("   before, speedup: the --baseline checkout's rate and its cost over vbusfs's)")


def print_growth(results: Results, small: int, large: int) -> list[str]:
    """The scale ratios; returns the vbusfs operations whose cost grows."""
    print(f"\nscale ratio: cost of one operation with {large:,} objects / with {small:,}"
          " (1.00 = flat; listings per entry)")  # fmt: skip
    print(f"  {'operation':<27}{f'vbusfs us@{small}':>15}{f'vbusfs us@{large}':>16}"
          f"{'vbusfs':>8}{'minimal':>9}{'tmpfs':>8}")  # fmt: skip
    growing = []
    for op in OPS:
        cost = {
            (kind, scale): results.per_item(kind, scale, op.key)
            for kind in KINDS[:3]
            for scale in (small, large)
        }
        small_v, large_v = cost["vbusfs", small], cost["vbusfs", large]
        flag = ""
        if small_v and large_v and large_v / small_v > GROWTH_LIMIT:
            small_m, large_m = cost["minimal", small], cost["minimal", large]
            floor = large_m / small_m if small_m and large_m else 1.0
            if large_v / small_v > GROWTH_LIMIT * max(floor, 1.0):
                flag = "  <- grows"
                growing.append(op.label)
        label = op.label + (" /entry" if op.per_entry else "")
        ratios = [_ratio(cost[kind, large], cost[kind, small]) for kind in KINDS[:3]]
        print(f"  {label:<27}{_us(small_v):>15}{_us(large_v):>16}{ratios[0]:>8}{ratios[1]:>9}"
              f"{ratios[2]:>8}{flag}")  # fmt: skip
    return growing


NOISE = (
    "noise caveat: 2 shared vCPUs in a VM, other work running alongside; absolute rates move\n"
    "  by tens of percent from run to run. The peers take short turns, alternating, and the best\n"
    "  turn is kept, so noise hits them alike: trust ratios over rates, and read scale ratios\n"
    f"  within about +-{GROWTH_LIMIT - 1:.0%} of 1.00 as flat."
)

"""Attribute value tables: what one writable attribute accepts, refuses and reads back.

`AttributeValues` (strategies of valid and invalid values, what a valid one
reads as, and per-example tables with their readouts and errnos) is what the
conformance machine takes for each writable attribute; `choice_values` and
`integer_values` make the common ones. Pure: drawing never touches the host.
"""

from __future__ import annotations

import errno as _errno
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from hypothesis import strategies as st


def _identity(text: str) -> str:
    return text


@dataclass(frozen=True)
class AttributeValues:
    """What one writable attribute must accept, refuse, and read back.

    `valid`: values a store must accept; `invalid`: values a store must refuse
    with EINVAL, changing nothing; `shows(value)`: what the attribute reads
    (without the newline) after `value` from `valid` was stored.

    Beside the strategies, per-example tables the machine tries in every program
    (and mixes into its draws): `valid_examples` maps a value to what the
    attribute then reads (None: `shows(value)`), `invalid_examples` maps a value
    to the errno its refusal must carry (ENOENT for a missing file, say; the
    drawn `invalid` values are always EINVAL). Either may be given as a plain
    list: readouts from `shows`, refusals EINVAL. An attribute may have tables
    and no strategy (`valid` and `invalid` default to nothing).
    """

    valid: st.SearchStrategy[str] = field(default_factory=st.nothing)
    invalid: st.SearchStrategy[str] = field(default_factory=st.nothing)
    shows: Callable[[str], str] = _identity
    valid_examples: Mapping[str, str | None] = field(default_factory=dict)
    invalid_examples: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        valid, invalid = self.valid_examples, self.invalid_examples
        if not isinstance(valid, Mapping):
            object.__setattr__(self, "valid_examples", dict.fromkeys(valid))
        if not isinstance(invalid, Mapping):
            object.__setattr__(self, "invalid_examples", dict.fromkeys(invalid, _errno.EINVAL))

    def readout(self, value: str) -> str:
        """What the attribute reads after the valid `value` was stored."""
        table = self.valid_examples.get(value)
        return table if table is not None else self.shows(value)

    def refusal(self, value: str) -> int:
        """The errno a store of the invalid `value` must be refused with."""
        return self.invalid_examples.get(value, _errno.EINVAL)

    def valid_values(self) -> st.SearchStrategy[str] | None:
        """Valid values to draw: the strategy's and the table's (None: there are none)."""
        return _either(self.valid, sorted(self.valid_examples))

    def invalid_values(self) -> st.SearchStrategy[str] | None:
        """Refused values to draw: the strategy's and the table's (None: there are none)."""
        return _either(self.invalid, sorted(self.invalid_examples))


def _either(strategy: st.SearchStrategy[str], examples: list[str]) -> st.SearchStrategy[str] | None:
    parts = [st.sampled_from(examples)] if examples else []
    if not strategy.is_empty:
        parts.append(strategy)
    return st.one_of(*parts) if parts else None


def _usable_invalid(text: str) -> bool:
    return bool(text) and not text.endswith("\n")


def choice_values(choices: Iterable[str]) -> AttributeValues:
    """An attribute that accepts exactly `choices` and reads back what was written."""
    allowed = sorted(set(choices))
    near = [c + suffix for c in allowed for suffix in (" ", "x", "\t")] + [" " + allowed[0]]
    invalid = st.one_of(st.sampled_from(near), st.text(max_size=16)).filter(
        lambda text: _usable_invalid(text) and text not in allowed
    )
    return AttributeValues(st.sampled_from(allowed), invalid)


def integer_values(low: int, high: int) -> AttributeValues:
    """A decimal integer attribute with an inclusive range (leading zeros accepted)."""
    in_range = st.integers(low, high)
    valid = st.one_of(
        in_range.map(str),
        st.tuples(in_range, st.integers(1, 3)).map(lambda t: "0" * t[1] + str(t[0])),
    )
    outside = []
    if low > -(1 << 64):
        outside.append(st.integers(max(low - (1 << 40), -(1 << 64)), low - 1).map(str))
    outside.append(st.integers(high + 1, high + (1 << 40)).map(str))
    malformed = st.one_of(
        st.sampled_from(["x", "1.5", "+1", " 1", "1 ", "0x10", "1e3", "\u0661", "--1", "- 1"]),
        st.text(max_size=12),
    )

    def refused(text: str) -> bool:
        if not _usable_invalid(text):
            return False
        if re.fullmatch(r"-?[0-9]+", text) is None:
            return True
        return not low <= int(text) <= high

    return AttributeValues(
        valid, st.one_of(*outside, malformed).filter(refused), lambda text: str(int(text))
    )

"""Options that a registered method declares, so that callers (the CLI above all) need no
knowledge of any one method: each option has a name, a type, a default and a help line.

A method lists its options (``options = (Option("update_every", int, 100, "steps between
updates"),)``); ``sparsecraft.cli._common.add_option_flags`` turns them into ``--update-every``
flags and :func:`collect` picks the values given for them back out.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .errors import SparsecraftError


@dataclass(frozen=True)
class Option:
    """One keyword option of a method.

    Parameters
    ----------
    name : str
        Keyword argument name (``snake_case``); the CLI flag is ``--name-with-dashes``.
    type : type
        ``int``, ``float``, ``str`` or ``bool`` (a bool option becomes an on/off flag).
    default : Any
        Value used when the option is not given (``None``: the method decides).
    help : str
        One line for ``--help``.
    choices : tuple, optional
        Allowed values, if the option is a closed set.
    bounds : str, optional
        The interval a number must lie in, written ``"(0, 1]"``, ``"[1, inf)"`` or ``"(0, inf)"``
        (a parenthesis excludes its end); NaN never lies in one, nor inf unless a bracket includes it.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    bounds: str | None = None

    def __post_init__(self) -> None:
        if self.bounds is not None:
            _interval(self.bounds)  # a malformed declaration fails at import, not at a user's call

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """Return ``value`` converted to the option's type; one-line error if it does not fit its
        type, its choices or its bounds."""
        if value is None:
            return None
        try:
            value = self.type(value)
        except (TypeError, ValueError):
            raise SparsecraftError(f"{self.flag} must be {self.type.__name__}, got {value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise SparsecraftError(f"{self.flag} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.bounds is not None and not _within(value, self.bounds):
            raise SparsecraftError(f"{self.flag} {_describe(self.bounds, self.type)}, got {value!r}")
        return value


_INTERVAL = re.compile(r"([\[(])\s*([^,\s]+)\s*,\s*([^\s\])]+)\s*([\])])")


def _interval(bounds: str) -> tuple[str, float, float, str]:
    """``"(0, 1]"`` as ``("(", 0.0, 1.0, "]")``; ValueError for anything else."""
    match = _INTERVAL.fullmatch(bounds.strip())
    if match is None:
        raise ValueError(f"bounds must be an interval such as '(0, 1]' or '[1, inf)', got {bounds!r}")
    return match[1], float(match[2]), float(match[3]), match[4]


def _within(value: Any, bounds: str) -> bool:
    """Whether the number ``value`` lies in the interval ``bounds`` (never NaN)."""
    left, low, high, right = _interval(bounds)
    above = value >= low if left == "[" else value > low
    below = value <= high if right == "]" else value < high
    return bool(above and below)


def _describe(bounds: str, kind: type) -> str:
    """``"must be an integer >= 1"``, ``"must be a finite number > 0"`` or ``"must lie in (0, 1]"``."""
    left, _, high, _ = _interval(bounds)
    if high != math.inf:
        return f"must lie in {bounds}"
    lowest = _INTERVAL.fullmatch(bounds.strip())[2]
    return f"must be {'an integer' if kind is int else 'a finite number'} {'>=' if left == '[' else '>'} {lowest}"


def collect(options: Sequence[Option], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``options`` found in ``values`` (e.g. ``vars(args)``), skipping unset ones.

    Parameters
    ----------
    options : sequence of Option
    values : mapping from option name to the value given (``None`` when not given)

    Returns
    -------
    dict
        ``{name: checked value}`` for every option given a non-``None`` value.
    """
    out = {}
    for opt in options:
        value = values.get(opt.name)
        if value is not None:
            out[opt.name] = opt.check(value)
    return out


def union(groups: Iterable[Sequence[Option]]) -> list[Option]:
    """All options of several methods, each name once (the first declaration wins)."""
    seen: dict[str, Option] = {}
    for group in groups:
        for opt in group:
            seen.setdefault(opt.name, opt)
    return list(seen.values())

"""Options that a registered method declares, so that callers (the CLI above all) need no
knowledge of any one method: each option has a name, a type, a default and a help line.

A method lists its options (``options = (Option("update_every", int, 100, "steps between
updates"),)``); ``sparsecraft.cli._common.add_option_flags`` turns them into ``--update-every``
flags and :func:`collect` picks the values given for them back out.
"""
from __future__ import annotations

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
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """Return ``value`` converted to the option's type; one-line error if it does not fit."""
        if value is None:
            return None
        try:
            value = self.type(value)
        except (TypeError, ValueError):
            raise SparsecraftError(f"{self.flag} must be {self.type.__name__}, got {value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise SparsecraftError(f"{self.flag} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        return value


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

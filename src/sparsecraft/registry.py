"""A tiny name -> implementation registry shared by criteria, allocators, patterns, updaters, formats.

A new method from a paper is one decorated function or class in one new file:

    CRITERIA = Registry("criterion")

    @CRITERIA.register("magnitude")
    def magnitude(...): ...
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import SparsecraftError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to implementations; unknown names raise a one-line error listing valid ones.

    Parameters
    ----------
    kind : str
        What the registry holds, for messages (``"criterion"``, ``"training method"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering its argument as ``name``; registering a name twice is a bug.

        Parameters
        ----------
        name : str

        Returns
        -------
        callable
            The decorator; it returns the decorated object unchanged.
        """
        def decorator(obj: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The implementation registered as ``name``.

        Raises
        ------
        SparsecraftError
            One line naming the unknown ``name`` and every valid one.
        """
        try:
            return self._items[name]
        except KeyError:
            raise SparsecraftError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """``(name, implementation)`` pairs in registration order (e.g. to try parsers in turn)."""
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

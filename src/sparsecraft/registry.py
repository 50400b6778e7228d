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
    """Maps names to implementations; unknown names raise a one-line error listing valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise SparsecraftError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

"""Name → object registries for models, datasets and losses.

Adding a component is one new file plus one ``@REGISTRY.register("name")`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from retinaseg.errors import RetinasegError

T = TypeVar("T")


class Registry(Generic[T]):
    """A case-insensitive map from a public name to a class or factory."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that records ``obj`` under ``name``; a duplicate name is a bug."""

        def deco(obj: T) -> T:
            key = name.lower()
            if key in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the entry for ``name`` or raise one clear error listing the known names."""
        key = name.lower()
        if key not in self._items:
            known = ", ".join(sorted(self._items))
            raise RetinasegError(f"unknown {self.kind} '{name}'; known: {known}")
        return self._items[key]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items


MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
LOSSES: Registry = Registry("loss")

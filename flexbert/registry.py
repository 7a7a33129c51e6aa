"""One small registry helper shared by every swappable kind of module.

A registry maps a YAML name to a class or factory.  Adding a module is one class plus one
``@REGISTRY.register("name")`` line; asking for an unknown name fails with the valid choices.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, Iterable, TypeVar

from flexbert.errors import FlexBertError

T = TypeVar("T")


class ConfigError(FlexBertError, ValueError):
    """A configuration is invalid; the message is one line naming the key.

    Defined here, below both ``flexbert.config`` and ``flexbert.model.registries`` (which raise
    it), so neither has to import the other."""


class RegistryError(FlexBertError, ValueError):
    """An unknown name was asked of a registry."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(key: str | None, kind: str, name: object, choices: Iterable[str],
                   valid: str = "valid choices", shown: str | None = None) -> str:
    """The one-line message for a name that is not among ``choices``, e.g.
    ``model.norm: unknown norm 'rmsnrom' (did you mean 'rmsnorm'?); valid choices: layernorm, rmsnorm``
    (``shown``: how to print the name, when not as compared, e.g. with its section in front)."""
    choices = list(choices)
    where = f"{key}: " if key else ""
    label = name if shown is None else shown
    return f"{where}unknown {kind} '{label}'{did_you_mean(str(name), choices)}; {valid}: {', '.join(choices)}"


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, key: str | None = None) -> T:
        if name not in self._items:
            raise RegistryError(unknown_choice(key, self.kind, name, self.choices))
        return self._items[name]

    def check(self, name: str, key: str | None = None) -> None:
        self.get(name, key)

    @property
    def choices(self) -> list[str]:
        return sorted(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self.choices)})"

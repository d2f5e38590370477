"""A table of named entries, the one mechanism behind the judge registry and the engine registry.

Torch-free, so the CLI can list judges and engines without importing a model library.

>>> table = Table("colour", "name")
>>> from types import SimpleNamespace as Entry
>>> table.register(Entry(name="red")).name, table.names()
('red', ['red'])
>>> table.spec("blue")
Traceback (most recent call last):
...
presrm.errors.ConfigError: colour 'blue' is not one of: red
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from presrm.errors import ConfigError

T = TypeVar("T")


class Table(dict, Generic[T]):
    """Entries by name, in registration order. ``what`` names an entry in messages (``judge mode``, ``engine``);
    ``key`` is the entry attribute that holds its name."""

    def __init__(self, what: str, key: str) -> None:
        super().__init__()
        self.what, self.key = what, key

    def register(self, entry: T, *, replace: bool = False) -> T:
        """Add ``entry``; ``replace`` to redefine an existing one. Returns ``entry``."""
        name: Any = getattr(entry, self.key)
        if name in self and not replace:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that add a toy one)."""
        self.pop(name, None)

    def spec(self, name: str) -> T:
        """The entry of ``name``; an unknown name is a ConfigError that lists the known ones."""
        try:
            return self[name]
        except KeyError:
            raise ConfigError(f"{self.what} {name!r} is not one of: {', '.join(self)}") from None

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self)

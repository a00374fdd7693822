"""One registry type for every pluggable kind (attacks, defenses): timm-style
``create(name, **kw)`` and ``list()`` so that the CLI and the benchmark never hard-code names."""
from __future__ import annotations

from typing import Any


class Registry:
    """Maps names (case-insensitive, ``_`` ≡ ``-``) to classes with a ``name`` attribute."""

    def __init__(self, kind: str, error: type[Exception]) -> None:
        self.kind, self.error = kind, error
        self._classes: dict[str, type] = {}

    @staticmethod
    def _key(name: str) -> str:
        return name.lower().replace("_", "-")

    def register(self, cls: type) -> type:
        """Class decorator: register ``cls`` under ``cls.name``."""
        self._classes[self._key(cls.name)] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(cls.name for cls in self._classes.values())

    def get(self, name: str) -> type:
        try:
            return self._classes[self._key(name)]
        except KeyError:
            raise self.error(f"unknown {self.kind} '{name}'. Valid {self.kind}s: {', '.join(self.names())}") from None

    def create(self, name: str, **kwargs: Any) -> Any:
        """Instantiate ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

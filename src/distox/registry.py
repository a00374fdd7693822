"""One registry type for every pluggable kind (attacks, defenses): timm-style
``create(name, **kw)`` and ``list()`` so that the CLI and the benchmark never hard-code names."""
from __future__ import annotations

import inspect
from typing import Any


def keyword_names(obj: Any) -> set[str] | None:
    """Keyword arguments a function, or a class's ``__init__``, accepts; for a class whose
    ``__init__`` takes ``**kwargs`` the names accepted up its MRO are added (a D3 forwards
    ``epochs`` to :class:`~distox.defenses.base.Defense`). None: it accepts any keyword."""
    names: set[str] = set()
    chain = [vars(k)["__init__"] for k in obj.__mro__ if "__init__" in vars(k) and k is not object] \
        if isinstance(obj, type) else [obj]
    for fn in chain:
        params = list(inspect.signature(fn).parameters.values())
        if isinstance(obj, type):
            params = params[1:]  # self
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


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

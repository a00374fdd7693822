"""One registry type for every pluggable kind (attacks, defenses): timm-style
``create(name, **kw)`` and ``list()`` so that the CLI and the benchmark never hard-code names."""
from __future__ import annotations

import inspect
from typing import Any


def init_parameters(cls: type) -> tuple[list[inspect.Parameter], bool]:
    """The keyword parameters of ``cls.__init__`` along the MRO (a subclass's own first, then
    those its ``**kwargs`` hands on), and whether it accepts any keyword at all (a ``**kwargs``
    chain that never ends in a signature without one)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        var_kw = False
        for p in list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                var_kw = True
            elif p.kind is not inspect.Parameter.VAR_POSITIONAL:
                params.setdefault(p.name, p)
        if not var_kw:
            return list(params.values()), False
    return list(params.values()), True


def keyword_names(obj: Any) -> set[str] | None:
    """Keyword arguments a function, or a class's ``__init__`` (up its MRO while it hands
    ``**kwargs`` on: a D3 forwards ``epochs`` to :class:`~distox.defenses.base.Defense`), accepts.
    None: it accepts any keyword."""
    if isinstance(obj, type):
        params, any_keyword = init_parameters(obj)
    else:
        sig = list(inspect.signature(obj).parameters.values())
        params = [p for p in sig if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        any_keyword = any(p.kind is p.VAR_KEYWORD for p in sig)
    if any_keyword:
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


class Registry:
    """Maps names (case-insensitive, ``_`` ≡ ``-``) to classes with a ``name`` attribute.

    A class with ``listed = False`` (e.g. the ``imported`` attack, which only stands for
    another tool's stored poisoned images) can be looked up but is left out of :meth:`names`."""

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
        """The names a user can choose (classes with ``listed = False`` left out), sorted."""
        return sorted(cls.name for cls in self._classes.values() if getattr(cls, "listed", True))

    def get(self, name: str) -> type:
        try:
            return self._classes[self._key(name)]
        except KeyError:
            raise self.error(f"unknown {self.kind} '{name}'. Valid {self.kind}s: {', '.join(self.names())}") from None

    def create(self, name: str, **kwargs: Any) -> Any:
        """Instantiate ``name`` with keyword arguments."""
        return self.get(name)(**kwargs)

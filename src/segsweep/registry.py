"""One registry per extension point (losses, optimizers, schedules, regularizers, models, fine-tuning modes,
layouts, search modes, samplers, pruners, figures): a new variant is one class or function plus its ``@REGISTRY.register("name")`` line, in
the file that implements it.

Conventions every registry shares:

* A variant's **hyperparameters are its keyword-only arguments with defaults** (``def __init__(self, *,
  alpha=0.25)`` or ``def f(lr0, ..., *, rate=0.96)``). ``Registry.params(name)`` reads them from the
  signature, so a default lives in exactly one place: the implementation. Config values for other keys are
  dropped, so an irrelevant key never splits one cell into two.
* An unknown name raises ``ConfigError`` naming the config key and the known names.
* A name is written once, at registration: the schema's enum for the key is filled in from ``names()`` when
  ``segsweep.plan.config`` loads it, or (plan-level registries) the lookup at plan time checks it.
* ``meta`` holds what a variant declares beyond its parameters (a search mode's ``adaptive`` / ``ordered``,
  a fine-tuning mode's ``revision``, a figure's caption).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from segsweep.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered variant: its name, the class/function, and free-form metadata (e.g. a caption)."""

    name: str
    obj: T
    meta: dict = field(default_factory=dict)


class Registry(Generic[T]):
    """Named variants of one extension point. ``key`` is the config key that selects a variant."""

    def __init__(self, kind: str, key: str):
        self.kind, self.key = kind, key
        self._entries: dict[str, Entry[T]] = {}
        self._params: dict[str, dict[str, Any]] = {}  # memo of params(): read per cell and per step

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: ``@LOSSES.register("dice")`` above the class or function."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, obj, dict(meta))
            self._params.pop(name, None)
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove a variant (tests that register a toy variant; see `registered`)."""
        self.entry(name)
        del self._entries[name]
        self._params.pop(name, None)

    @contextmanager
    def registered(self, name: str, obj: T, **meta: Any) -> Iterator[T]:
        """``with LOSSES.registered("toy", ToyLoss): ...``: the variant exists only inside the block."""
        self.register(name, **meta)(obj)
        try:
            yield obj
        finally:
            self.unregister(name)

    def entry(self, name: str, key: str | None = None) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"config key '{key or self.key}': unknown {self.kind} {name!r} (known: {', '.join(self.names())})"
            ) from None

    def __getitem__(self, name: str) -> T:
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def params(self, name: str) -> dict[str, Any]:
        """The variant's hyperparameters and defaults: its keyword-only arguments (see module doc)."""
        if name not in self._params:
            self._params[name] = keyword_defaults(self[name])
        return dict(self._params[name])


def keyword_defaults(obj: Callable) -> dict[str, Any]:
    """``{name: default}`` of the keyword-only parameters of a function or of a class's ``__init__``."""
    sig = inspect.signature(obj)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }


def import_submodules(package: str) -> None:
    """Import every module of ``package``, so that a variant in a new file registers itself (layouts)."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{info.name}")

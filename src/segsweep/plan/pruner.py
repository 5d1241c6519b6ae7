"""The interface every pruner implements (`segsweep.plan.pruning` holds the registry and the two pruners).

A pruner runs a study in stages (rules/prune.smk): ``stage_files(k, cells)`` names what stage k asks of a
configuration's cells, ``decide(study, k, alive)`` says after stage k which configurations go on, and
``budget(k)`` what stage k has spent (a ``Budget``: figures read the number, never parse text). The planner
builds it with ``from_study`` (its settings are the keyword-only arguments of ``__init__``, checked against
the study; a ConfigError names ``studies.<s>.pruner.<key>``), and the decision job rebuilds it from
``state()`` with ``from_state``: planning round-trips that state once, so a pruner whose state does not come
back equal stops ``snakemake -n`` naming it, not a decision job later.

Class attributes declare what it can prune: ``adaptive`` (each round of an adaptive study, whose cells are
proposed in rounds and share the study's base epochs), ``cv`` (a ``cv: true`` study).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

from segsweep.errors import ConfigError
from segsweep.registry import keyword_defaults
from segsweep.study import Budget, Study, StudyCell

__all__ = ["Budget", "Pruner", "StudyFacts"]


@dataclasses.dataclass(frozen=True)
class StudyFacts:
    """What a pruner may check its settings against at plan time."""

    name: str
    study: Study  # an adaptive study's has no cells yet
    spec: Mapping  # its config mapping (studies.<name>)
    epochs: frozenset[int]  # the epochs of its cells (an adaptive study's: its base's)
    cfg: Mapping  # the whole config (scale preset, ...)

    def key(self, *parts: str) -> str:
        return ".".join(("studies", self.name, "pruner", *parts))


class Pruner(ABC):
    """A pruner (module docstring). A frozen dataclass whose fields are its constructor's keyword arguments
    gets ``state``/``from_state`` for free; any other class overrides both."""

    adaptive: ClassVar[bool] = False
    cv: ClassVar[bool] = False

    @property
    @abstractmethod
    def n_stages(self) -> int: ...

    @abstractmethod
    def stage_files(self, k: int, cells: Sequence[StudyCell]) -> list[str]: ...

    @abstractmethod
    def budget(self, k: int) -> Budget: ...

    @abstractmethod
    def decide(self, study: Study, k: int, alive: Mapping[str, Sequence[StudyCell]]) -> dict:
        """``{"scores": {config: value}, "keep": [config], "pruned": [{config, cells, reason, epochs_run, value,
        value_key}], "rule": text}``."""

    def cell_rungs(self) -> tuple[int, ...]:
        """The epochs a cell stops at before its final train job (none by default)."""
        return ()

    @classmethod
    def from_study(cls, settings: Mapping, facts: StudyFacts) -> Pruner:
        """The pruner for a study: ``cls(**settings)``; override to derive settings from the study or check it.
        A setting that is no keyword-only argument of ``__init__`` is named with the closest known ones."""
        known = keyword_defaults(cls)
        for k in settings:
            if k not in known:
                close = difflib.get_close_matches(str(k), list(known), n=3, cutoff=0.6)
                hint = f"closest known: {', '.join(close)}" if close else f"known: {', '.join(known) or 'none'}"
                raise ConfigError(f"config key '{facts.key(str(k))}': unknown setting of this pruner ({hint})")
        try:
            return cls(**settings)
        except TypeError as exc:
            raise ConfigError(f"config key '{facts.key()}': {exc}") from None

    def state(self) -> dict:
        """JSON form of the pruner (the decision rule's params)."""
        if not dataclasses.is_dataclass(self):
            raise NotImplementedError(f"{type(self).__name__} is no dataclass: it must define state()")
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_state(cls, state: Mapping) -> Pruner:
        return cls(**state)


def check_round_trip(pruner: Pruner, name: str, key: str) -> None:
    """ConfigError naming the pruner when its state is not JSON or does not rebuild an equal pruner."""
    try:
        state = pruner.state()
        back = type(pruner).from_state(json.loads(json.dumps(state)))
        ok = back.state() == state
        why = f"from_state(state()) gives {back.state()!r}, not {state!r}"
    except Exception as exc:  # noqa: BLE001 — any failure here is the pruner's, named below
        ok, why = False, f"{type(exc).__name__}: {exc}"
    if not ok:
        raise ConfigError(f"config key '{key}': pruner '{name}' cannot round-trip its state ({why})")

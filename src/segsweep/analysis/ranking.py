"""Which configuration of a study is best: one ranking rule for the table, the statistics and the report.

Groups are `segsweep.analysis.configs.config_groups` dicts (``mean``, ``status``, ...). Configurations whose
runs all finished ``ok`` beat partial ones; then the mean decides (higher or lower is better per study).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def rank_key(g: Mapping, higher_is_better: bool) -> tuple:
    """Sort key, larger = better: configurations whose runs all finished beat partial ones, then the mean."""
    if g["mean"] is None:
        return (0, 0, -math.inf)
    return (1, int(g["status"] == "ok"), g["mean"] if higher_is_better else -g["mean"])


def best_group(groups: Sequence[dict], higher_is_better: bool) -> dict | None:
    """The best configuration with a mean (the first of equals), or None when none has one."""
    cands = [g for g in groups if g["mean"] is not None]
    return max(cands, key=lambda g: rank_key(g, higher_is_better)) if cands else None


def ranked(groups: Sequence[dict], higher_is_better: bool) -> list[dict]:
    """Configurations with a mean, best first (stable for equals)."""
    return sorted(
        (g for g in groups if g["mean"] is not None), key=lambda g: rank_key(g, higher_is_better), reverse=True
    )

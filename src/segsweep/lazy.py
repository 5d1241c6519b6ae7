"""Modules imported on first use.

Planning (``snakemake -n``, the Snakefile parse in every Slurm job) reads each extension point's
*specification* (names, defaults, checks) and never runs its torch *implementation*. Importing torch costs
2-4 CPU s per process, ``torch._dynamo`` through torchvision 4 s more, so the modules that hold both name
torch through ``LazyModule``: the import happens when an implementation first touches it.
``tests/test_plan_without_torch.py`` checks that planning leaves ``torch`` out of ``sys.modules``.
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """``torch = LazyModule("torch")``: the first attribute read imports the module; later reads of the same
    attribute are plain instance-dict look-ups (the value is cached), so a hot loop pays nothing extra."""

    def __init__(self, name: str):
        self.__dict__["_lazy_name"] = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # copy/pickle/inspect probes must not import anything
            raise AttributeError(attr)
        value = getattr(importlib.import_module(self.__dict__["_lazy_name"]), attr)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_name']!r}>"

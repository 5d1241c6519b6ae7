"""Labels: how values are written in tables, figures and the report (one formatter for each kind of value)."""
from __future__ import annotations

from typing import Any, Mapping


def format_value(v: Any) -> str:
    """Short, stable label of an axis value for tables and figures."""
    if isinstance(v, Mapping):
        if "label" in v:
            return str(v["label"])
        if "terms" in v:
            return format_value(v["terms"])
        if set(v) == {"name"} or len(v) == 1 and "name" in v:
            return str(v["name"])
        inner = ",".join(f"{k}={format_value(x)}" for k, x in v.items() if k != "name")
        return f"{v.get('name', '')}({inner})"
    if isinstance(v, (list, tuple)):
        return "+".join(format_value(x) for x in v)
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)

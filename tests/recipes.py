"""CONTRIBUTING.md's recipe code, for the tests that perform the recipes as written."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def recipe_blocks(heading: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block under ``## <heading>`` in CONTRIBUTING.md, without the fence's indent
    (a block inside a numbered list is indented like the list item)."""
    section = (ROOT / "CONTRIBUTING.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^( *)```(\w+)\n(.*?)^ *```", section, re.S | re.M)
    return [(lang, "\n".join(ln[len(ind) :] for ln in code.splitlines())) for ind, lang, code in found]

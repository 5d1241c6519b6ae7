"""CONTRIBUTING.md's recipe code, and performing it in a copy of the package, for the tests that perform the recipes
as written."""

import re
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "segsweep"


def recipe_blocks(heading: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block under ``## <heading>`` in CONTRIBUTING.md, without the fence's indent
    (a block inside a numbered list is indented like the list item)."""
    section = (ROOT / "CONTRIBUTING.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^( *)```(\w+)\n(.*?)^ *```", section, re.S | re.M)
    return [(lang, "\n".join(ln[len(ind) :] for ln in code.splitlines())) for ind, lang, code in found]


def table_examples() -> tuple[dict[str, str], str]:
    """The python blocks of "Add a schedule, optimizer, regulariser or model", by the file their first line
    names (``# training/optim.py``), and its yaml block (the schema key of poly's ``power``)."""
    blocks = recipe_blocks("Add a schedule, optimizer, regulariser or model")
    files = {c.splitlines()[0].removeprefix("# "): c for lang, c in blocks if lang == "python"}
    ((schema_line),) = [c for lang, c in blocks if lang == "yaml"]
    return files, schema_line


def copy_package(dst: Path) -> Path:
    """A copy of src/segsweep at ``dst`` (returned)."""
    shutil.copytree(SRC, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def edited(pkg: Path) -> list[str]:
    """The package files whose text differs from src/segsweep's."""
    return sorted(
        str(f.relative_to(pkg))
        for f in pkg.rglob("*")
        if f.is_file()
        and (not (SRC / f.relative_to(pkg)).is_file() or f.read_bytes() != (SRC / f.relative_to(pkg)).read_bytes())
    )


def append(path: Path, code: str) -> None:
    """``code`` at the end of ``path`` (a new file if there is none)."""
    old = path.read_text().rstrip("\n") + "\n\n\n" if path.exists() else ""
    path.write_text(old + code.strip("\n") + "\n")


def add_file_block(pkg: Path, code: str) -> None:
    """A block whose first line names its file (``# training/optim.py``): appended to that file of ``pkg``, or
    the new module it is, without that line."""
    first, rest = code.split("\n", 1)
    path = pkg / first.removeprefix("# ")
    append(path, code if path.exists() else rest)


def add_schedule_key(pkg: Path, schema_yaml: str) -> None:
    """The recipe's schema line (a new schedule keyword) into ``schedule``'s object properties of the copy's
    config.schema.yaml."""
    schema = pkg / "plan" / "config.schema.yaml"
    doc = yaml.safe_load(schema.read_text())
    doc["definitions"]["schedule"]["oneOf"][1]["properties"].update(yaml.safe_load(schema_yaml.strip()))
    schema.write_text(yaml.safe_dump(doc, sort_keys=False))


def add_cell_key(pkg: Path, field: str) -> str:
    """ "Add a hyperparameter": the recipe's field line at the end of ``CellParams``' fields in the copy's
    training/params.py. Returns the key's name."""
    params = pkg / "training" / "params.py"
    text = params.read_text()
    end = "\n\n    @classmethod\n    def from_config("  # the end of CellParams' fields
    assert text.count(end) == 1
    params.write_text(text.replace(end, "\n" + field.rstrip("\n") + end))
    return re.match(r"\s*(\w+):", field).group(1)


def add_layout(pkg: Path, code: str) -> str:
    """ "Add a data layout": the recipe's module as data/layouts/<name>.py of the copy, ``<name>`` the one its
    ``register(Layout("<name>", ...))`` gives. Returns the name."""
    name = re.search(r'register\(\s*Layout\(\s*"(\w+)"', code).group(1)
    (pkg / "data" / "layouts" / f"{name}.py").write_text(code)
    return name

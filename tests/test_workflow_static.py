"""Static checks of the workflow: every rule has log/benchmark/conda/script; conda envs are pinned and
name every third-party package the rule's code imports (conda channels are unreachable here, so
`--use-conda` is verified by reading, not by running)."""

import ast
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "segsweep"
# PyPI distribution → import name (where they differ)
IMPORT_NAME = {
    "opencv-python-headless": "cv2",
    "pyyaml": "yaml",
    "pillow": "PIL",
    "pylibjpeg-libjpeg": "libjpeg",
    "pylibjpeg-openjpeg": "openjpeg",
    "pylibjpeg-rle": "rle",
}


def rules():
    """(rule name, body text) for every rule in rules/*.smk."""
    out = []
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        starts = [(m.start(), m.group(1)) for m in re.finditer(r"^\s*rule (\w+):", text, re.M)]
        for i, (pos, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            out.append((name, text[pos:end]))
    return out


def directive(body, name):
    m = re.search(rf"^\s+{name}:\s*\n?\s*\"([^\"]+)\"", body, re.M)
    return m.group(1) if m else None


def env_packages(env_file):
    env = yaml.safe_load(env_file.read_text())
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for p in dep["pip"]:
                name, _, ver = p.partition("==")
                pins[name.lower()] = ver
        else:
            name, _, ver = dep.partition("=")
            pins[name.lower()] = ver
    return pins


def imports_of(path: Path, seen: set[str]) -> set[str]:
    """Top-level third-party imports of a file and, transitively, of the segsweep modules it imports."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        mods = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside segsweep
                base = path.parent if path.parent != SRC else SRC
                mod = node.module or ""
                target = (base / mod.replace(".", "/")) if mod else None
                cands = [target] if target else [base / a.name for a in node.names]
                for c in cands:
                    for f in (c.with_suffix(".py"), c / "__init__.py"):
                        if f.exists() and str(f) not in seen:
                            seen.add(str(f))
                            found |= imports_of(f, seen)
                continue
            mods = [node.module or ""]
            if node.module == "segsweep":
                mods += [f"segsweep.{a.name}" for a in node.names]
        for m in mods:
            top = m.split(".")[0]
            if top == "segsweep":
                rel = m.split(".")[1:]
                for f in (
                    SRC.joinpath(*rel).with_suffix(".py") if rel else SRC / "__init__.py",
                    SRC.joinpath(*rel, "__init__.py"),
                ):
                    if f.exists() and str(f) not in seen:
                        seen.add(str(f))
                        found |= imports_of(f, seen)
            elif top and top not in sys.stdlib_module_names and top != "snakemake":
                found.add(top)
    return found


def test_every_rule_declares_log_benchmark_conda_resources():
    names = []
    for name, body in rules():
        names.append(name)
        for d in ("log", "benchmark", "conda", "threads", "resources", "script"):
            assert re.search(rf"^\s+{d}:", body, re.M), f"rule {name} lacks `{d}:`"
    assert {"phantom", "ingest", "split", "train", "aggregate", "figures", "report"} <= set(names)


def test_envs_are_pinned_and_match_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = dict(d.split("==") for d in pyproject["project"]["dependencies"])
    pins = {k.lower(): v for k, v in pins.items()}
    for env_file in sorted((ROOT / "envs").glob("*.yaml")):
        for name, ver in env_packages(env_file).items():
            assert ver, f"{env_file.name}: {name} is not pinned"
            if name in pins:
                assert pins[name] == ver, f"{env_file.name}: {name}=={ver} but pyproject pins {pins[name]}"


def test_envs_cover_what_each_rule_imports():
    for name, body in rules():
        env = directive(body, "conda")
        script = directive(body, "script")
        env_file = (ROOT / "rules" / env).resolve()
        have = {IMPORT_NAME.get(p, p.replace("-", "_")) for p in env_packages(env_file)}
        need = imports_of((ROOT / "rules" / script).resolve(), set())
        missing = need - have
        assert not missing, f"rule {name}: {env_file.name} lacks {sorted(missing)}"


def test_snakemake_lint_is_clean():
    """`snakemake --lint` exits 1 whenever it prints any lint."""
    import subprocess

    snakemake = str(Path(sys.executable).with_name("snakemake"))
    proc = subprocess.run(
        [snakemake, "--lint", "-s", str(ROOT / "Snakefile"), "-d", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_the_rules_common_files_are_layered():
    """rules/common.smk, then adaptive_common.smk, then prune_common.smk (the Snakefile's include order): a
    file uses no function or constant that a file below it defines, so none calls another back."""
    files = ["common.smk", "adaptive_common.smk", "prune_common.smk"]
    included = re.findall(r'^include: "rules/(\w+\.smk)"', (ROOT / "Snakefile").read_text(), re.M)
    assert [f for f in included if f in files] == files
    texts = {f: (ROOT / "rules" / f).read_text() for f in files}
    defined = {f: set(re.findall(r"^(?:def (\w+)|([A-Z_]+) =)", t, re.M)) for f, t in texts.items()}
    defined = {f: {a or b for a, b in pairs} for f, pairs in defined.items()}
    for i, lower in enumerate(files):
        for upper in files[i + 1 :]:
            used = sorted(n for n in defined[upper] if re.search(rf"\b{n}\b", texts[lower]))
            assert not used, f"rules/{lower} uses {used} of rules/{upper}"

"""Every `snakemake ...` command README.md shows works as written: each is dry-run (``-n`` appended) in a fresh
copy of the repository's workflow and config, as a new user's clone has them, and must exit 0.

Commands come from README's fenced code blocks and inline code spans (a command with ``\\`` continuations
is joined). ``.venv/bin/snakemake`` and ``snakemake`` run this venv's snakemake. ``mine.yaml`` (the README's
"your own config file") is the README's own example study block. The few commands that need something a
fresh clone does not have are listed in `NEEDS_OUTSIDE_INPUT` with the reason; that list is checked against
the README too, so it cannot silently cover a command that no longer exists."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
COPIED = ("Snakefile", "rules", "workflow", "config", "profiles", "envs")

# command (as README spells it) → why a fresh clone cannot dry-run it
NEEDS_OUTSIDE_INPUT = {
    "snakemake predict --cores 2 --config predict='{input: /path/to/dicom/root, model: best}'": (
        "a placeholder DICOM root and a trained model (tests/test_predict.py runs predict for real)"
    ),
    ".venv/bin/snakemake --profile profiles/slurm --configfile config/seed_studies.yaml "
    "--config data='{source: rvsc, root: /data/RVSC/TrainingSet}'": (
        "the RVSC data set under /data and a Slurm cluster (tests/slurm runs the profile on the CI cluster)"
    ),
    "snakemake --cores 8 --use-conda": "conda (tests/test_workflow_static.py checks the envs' pins instead)",
}


def readme_commands(text: str) -> list[str]:
    """The snakemake command lines in ``text``'s fenced blocks and inline code spans, in order."""
    out = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+", " ", line.split(" #")[0]).strip()
            if re.match(r"(\.venv/bin/)?snakemake ", line):
                out.append(line)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    out += [c for c in re.findall(r"`([^`\n]+)`", prose) if re.match(r"(\.venv/bin/)?snakemake ", c)]
    return list(dict.fromkeys(out))


COMMANDS = readme_commands(README)


def test_the_readme_shows_the_commands_this_test_knows():
    assert len(COMMANDS) >= 6, COMMANDS  # the parser still finds them
    for cmd in NEEDS_OUTSIDE_INPUT:
        assert cmd in COMMANDS, f"README no longer shows {cmd!r}: drop it from NEEDS_OUTSIDE_INPUT"


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh copy of the workflow and its config (the library is imported from this checkout)."""
    wd = tmp_path_factory.mktemp("clone")
    for name in COPIED:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, wd / name)
    (wd / "src").symlink_to(ROOT / "src")
    # README's "your own config file": its example study, as the user would save it
    example = re.search(r"```yaml\n(studies:.*?)```", README, re.S).group(1)
    (wd / "mine.yaml").write_text(example)
    return wd


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c not in NEEDS_OUTSIDE_INPUT])
def test_readme_command_dry_runs(clone, cmd):
    argv = shlex.split(cmd)
    argv[0] = SNAKEMAKE
    proc = subprocess.run([*argv, "-n"], cwd=clone, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{cmd}\n{out[-3000:]}"
    assert "segsweep:" not in out  # no configuration error or warning of ours

"""The summary jobs at the end of a run (model cards, the report) start light: scipy.stats (0.9 s), pyplot
(0.35 s) and WeasyPrint (0.5 s) are imported where they are used, not by the modules their scripts import.
These jobs sit on the run's critical path after the last cell (benchmarks/README.md, benchmark 8)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAZY = ("torch", "scipy.stats", "matplotlib.pyplot", "weasyprint")


def _script_imports(script: str) -> str:
    """The segsweep import lines of workflow/scripts/<script>.py, as the job runs them."""
    text = (ROOT / "workflow" / "scripts" / f"{script}.py").read_text()
    lines = [re.sub(r"\s*#.*$", "", ln) for ln in text.splitlines() if re.match(r"(from|import) segsweep", ln)]
    assert lines, script
    return "\n".join(lines)


@pytest.mark.parametrize("script", ["report", "model_card", "aggregate"])
def test_summary_job_scripts_import_no_heavy_module(script):
    code = f"import sys\n{_script_imports(script)}\nprint([m for m in {LAZY!r} if m in sys.modules])\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", (script, out.stdout)


def test_lazy_imports_still_serve_their_callers(tmp_path):
    """The functions behind the lazy imports work from a fresh process (scipy.stats, pyplot)."""
    code = (
        "from pathlib import Path\n"
        "from segsweep.analysis import stats\n"
        "from segsweep.report import style\n"
        "print(stats.wilcoxon([0.1, -0.2, 0.3, 0.4, 0.5, 0.6])[1] > 0)\n"
        "with style.use():\n"
        "    import matplotlib.pyplot as plt\n"
        "    fig, ax = plt.subplots()\n"
        "    ax.plot([0, 1], [1, 0])\n"
        f"print(style.save(fig, Path({str(tmp_path / 'f.svg')!r})).stat().st_size > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr

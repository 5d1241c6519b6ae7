"""Logs that keep history (issue 26, part 6): Snakemake deletes a job's log before each attempt, yet every
attempt's lines stay in the log, each attempt under a header "attempt k of n" (segsweep.runner). Real Snakemake
retries of a tiny job: a training cell SIGTERM'd on attempt 1 (as Slurm's time-limit warning does) that
resumes on attempt 2, and a job that crashes twice then succeeds, run twice."""

import json
import re
import subprocess
import sys
from pathlib import Path

from test_train import _params, _write_dataset

from segsweep.runner import history_path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

TRAIN_JOB = """
import json, os, signal, sys, threading, time
from pathlib import Path
sys.path.insert(0, {src!r})
from segsweep import runner
from segsweep.training.job import run_train_job
from segsweep.training.params import CellParams

smk = snakemake
out = Path(smk.output[0]).parent
attempt = int(smk.resources.attempt)
if attempt == 1:  # the first attempt is stopped once it has trained an epoch, as Slurm's --signal=TERM does
    def stop():
        while not (out / "history.csv").exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=stop, daemon=True).start()
runner.run(
    smk, run_train_job, CellParams.from_dict(json.loads(smk.params.cell)), data_dir=Path(smk.params.data),
    split_path=Path(smk.params.split), out_dir=out, device="cpu", attempt=attempt,
    max_attempts=int(smk.resources.max_attempts),
)
"""

CRASH_JOB = """
import logging, sys
from pathlib import Path
sys.path.insert(0, {src!r})
from segsweep import runner

def work(attempt, out):
    logging.getLogger("segsweep.jobs").info("working on attempt %d", attempt)
    if attempt < 3:
        raise RuntimeError(f"crash on attempt {{attempt}}")
    Path(out).write_text("ok")

runner.run(snakemake, work, int(snakemake.resources.attempt), snakemake.output[0])
"""

SNAKEFILE = """
rule {rule}:
    output: "{output}"
    log: "logs/{rule}/c.log"
    retries: {retries}
    resources:
        attempt=lambda wc, attempt: attempt,
        max_attempts={retries} + 1,
    params: **{params!r}
    script: "job.py"
"""


def _workflow(wd: Path, rule: str, output: str, retries: int, job: str, params: dict | None = None) -> list[str]:
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "job.py").write_text(job.format(src=str(ROOT / "src")))
    (wd / "Snakefile").write_text(
        SNAKEFILE.format(rule=rule, output=output, retries=retries, params=params or {"x": 0})
    )
    return [SNAKEMAKE, "-s", str(wd / "Snakefile"), "-d", str(wd), "--cores", "1"]


def _headers(text: str) -> list[str]:
    return re.findall(r"==== rule \w+: (attempt \d+ of \d+) ====", text)


def test_a_sigtermed_then_resumed_cell_keeps_both_attempts_in_its_log(tmp_path):
    data_dir, split = _write_dataset(tmp_path / "data")
    p = _params(epochs=15, batch_size=2)
    params = {"cell": json.dumps(p.to_dict()), "data": str(data_dir), "split": str(split)}
    wd = tmp_path / "wd"
    cmd = _workflow(wd, "train", "cells/c/metrics.json", 1, TRAIN_JOB, params)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (wd / "logs" / "train" / "c.log").read_text()
    assert _headers(log) == ["attempt 1 of 2", "attempt 2 of 2"], log
    first, second = log.split("==== rule train: attempt 2 of 2 ====")
    assert "SIGTERM: preempted at epoch" in first and "(a stop, not a crash)" in first and "epoch 1/15" in first
    assert "resuming from" in second and "epoch 15/15" in second and "rule train: done" in second
    assert json.loads((wd / "cells" / "c" / "metrics.json").read_text())["epochs_run"] == 15
    assert history_path(wd / "logs" / "train" / "c.log").read_text() == log


def test_every_attempt_of_every_run_is_kept(tmp_path):
    wd = tmp_path / "wd"
    cmd = _workflow(wd, "job", "out.txt", 2, CRASH_JOB)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "crash on attempt 2" in proc.stderr  # Snakemake really ran (and retried) the crashing attempts
    log = wd / "logs" / "job" / "c.log"
    assert _headers(log.read_text()) == ["attempt 1 of 3", "attempt 2 of 3", "attempt 3 of 3"]
    assert re.findall(r"working on attempt (\d)", log.read_text()) == ["1", "2", "3"]
    # a second `snakemake` run of the job (attempt 1 again) appends to the same history
    (wd / "out.txt").unlink()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _headers(log.read_text()) == ["attempt 1 of 3", "attempt 2 of 3", "attempt 3 of 3"] * 2

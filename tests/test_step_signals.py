"""A Slurm job step's Snakemake passes its stop signals on to the script it runs (segsweep.training.step_signals).

Without Slurm: a parent process with the forwarder installed (as the step's Snakemake after parsing the
Snakefile) replaces its SIGTERM handler afterwards, as Snakemake's scheduler does; its child, the training
script's stand-in, records every stop signal it gets. The Slurm side (proctrack/cgroup signals only the step's
Snakemake) is tests/slurm/test_slurm.py on the cgroup test cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segsweep.training import step_signals

SRC = Path(__file__).resolve().parents[1] / "src"
STEP = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"}

# the training script's stand-in: one line per signal received, until 0.5 s after the first
CHILD = """
import signal, sys, time
out, ready = sys.argv[1:]
got = []
def handler(signum, frame):
    got.append(signum)
    with open(out, "a") as f:
        f.write(f"{signum}\\n")
signal.signal(signal.SIGTERM, handler)
signal.signal(signal.SIGUSR1, handler)
open(ready, "w").close()
deadline = time.time() + 20
while time.time() < deadline and not got:
    time.sleep(0.01)
time.sleep(0.5)  # a second delivery would be recorded
sys.exit(0 if got else 1)
"""

# the training script's stand-in, stopping through segsweep.training.preempt as the training loop does
PREEMPT_CHILD = """
import sys, time
from segsweep.training import preempt
out, ready = sys.argv[1:]
with preempt.catch_stop_signals() as request:
    open(ready, "w").close()
    deadline = time.time() + 20
    while time.time() < deadline and not request.requested:
        time.sleep(0.01)
    time.sleep(0.5)  # the second SIGTERM arrives meanwhile
    with open(out, "w") as f:
        f.write(f"{request.signum}\\n")
"""

# the step's Snakemake: the forwarder installed at the parse, then the scheduler's own SIGTERM handler
PARENT = """
import json, signal, subprocess, sys
from segsweep.training import step_signals
installed = step_signals.forward_in_job_step({"train"}, environ=json.loads(sys.argv[1]), notify=print)
assert installed and "torch" not in sys.modules
signal.signal(signal.SIGTERM, lambda signum, frame: print("scheduler handler", flush=True))
child = subprocess.Popen([sys.executable, "-c", sys.argv[2], *sys.argv[3:]])
sys.exit(child.wait())
"""


def _run(tmp_path: Path, child: str, send) -> tuple[subprocess.CompletedProcess, list[str]]:
    out, ready = tmp_path / "signals.txt", tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT, '{"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"}', child, str(out), str(ready)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: killpg reaches it and its child, not pytest
    )
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert ready.exists(), "the child never started"
    send(proc.pid)
    stdout, _ = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout), out.read_text().split()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_to_the_step_reaches_the_script_once(tmp_path, sig):
    done, got = _run(tmp_path, CHILD, lambda pid: os.kill(pid, sig))
    assert got == [str(int(sig))]  # once, although Snakemake's scheduler replaced the SIGTERM handler
    assert done.returncode == 0  # the step's Snakemake waited for the script (SIGUSR1 did not end it)
    assert f"passed {sig.name} on to 1 process(es)" in done.stdout
    assert ("scheduler handler" in done.stdout) == (sig == signal.SIGTERM)  # Snakemake's own handling still runs


def test_a_script_signalled_twice_still_stops_on_the_first(tmp_path):
    # proctrack/linuxproc signals every process of the step: the script gets Slurm's SIGTERM and the forwarded one
    done, got = _run(tmp_path, PREEMPT_CHILD, lambda pid: os.killpg(pid, signal.SIGTERM))
    assert got == [str(int(signal.SIGTERM))] and done.returncode == 0
    assert "passed SIGTERM on to 1 process(es)" in done.stdout


@pytest.mark.parametrize(
    ("environ", "targets"),
    [
        ({}, {"train"}),  # not in Slurm
        ({"SLURM_JOB_ID": "7"}, {"train"}),  # the batch step (22.05 sets no SLURM_STEP_ID there)
        ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "4294967291"}, {"train"}),  # the batch step's id
        (STEP, {"aggregate", "report"}),  # a step without training jobs
        (STEP, set()),  # no --target-jobs: not a job invocation (snakemake -n)
    ],
)
def test_nothing_is_installed_outside_a_training_job_step(environ, targets):
    assert step_signals.forward_in_job_step(targets, environ=environ) is False


def test_a_job_step_is_told_from_the_batch_step():
    assert step_signals.in_slurm_job_step(STEP)
    assert step_signals.in_slurm_job_step({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "12"})
    assert not step_signals.in_slurm_job_step({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "4294967291"})
    assert not step_signals.in_slurm_job_step({"SLURM_STEP_ID": "0"})

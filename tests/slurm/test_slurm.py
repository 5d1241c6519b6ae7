"""The real Snakefile through profiles/slurm on a real one-node Slurm cluster (tests/slurm/cluster.sh).

One tiny study (4 cells) runs twice with the same config: locally (profiles/local) and through Slurm
(profiles/slurm, unchanged except for where to submit, set the way a user sets it: environment variables).
During the Slurm run the first training job is cancelled with scancel while it trains a cell.
Checked: every non-local rule went through sbatch (job ids in sacct, slurmctld's log and
.snakemake/slurm_logs), with the profile's account and partitions and the stand-in GPU; training cells were
packed several to one sbatch with a GPU/CPU request that did not grow with the pack; the cancelled job was
resubmitted and the workflow completed; and the study table is identical to the local run's.

Run:  tests/slurm/cluster.sh start && .venv/bin/pytest -m slurm tests/slurm   (about 3 min on 2 cores)
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = ROOT / "tests" / "e2e" / "tiny_config.yaml"
SLURMCTLD_LOG = Path("/var/log/slurm/slurmctld.log")
# What tests/slurm/cluster.sh builds: the default account/partition and the ones the test asks for.
ACCOUNT, CPU_PARTITION, GPU_PARTITION = "ci-alt", "cpu", "gpu"
GROUP = 3  # cells per sbatch: 4 cells -> one job of 3 + one of 1
RUN_LIMIT_S = 600  # the whole study through Slurm on a loaded 2-core machine (inspect, model cards, ...)

pytestmark = pytest.mark.slurm


@functools.cache  # once per session: a failing module fixture is re-run for every test
def _cluster_skip_reason() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "Slurm client tools not installed (run: tests/slurm/cluster.sh start)"
    # find_spec, not import: importing the plugin queries `scontrol show config` (10 s without a controller).
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm not installed (pip install -e .[slurm])"
    try:
        # A stopped slurmctld makes sinfo retry for ~20 s; 5 s is plenty for a local one that is up.
        out = subprocess.run(["sinfo", "-h", "-r", "-o", "%P %t"], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: slurmctld not reachable (run: tests/slurm/cluster.sh start)"
    states = dict(line.split() for line in out.stdout.splitlines() if line.strip())
    if out.returncode != 0 or not states:
        return (
            f"Slurm cluster not up ({(out.stderr or 'no responding node').strip()}); run tests/slurm/cluster.sh start"
        )
    for part in (f"{CPU_PARTITION}*", GPU_PARTITION):
        if states.get(part) not in {"idle", "mix", "alloc"}:
            return f"partition {part.rstrip('*')} missing or not usable ({states}): not the cluster of tests/slurm/cluster.sh"
    return None


@pytest.fixture(scope="module", autouse=True)
def _cluster_up():
    """Skip (not fail) without the cluster; checked here, not at import, so `-m "not slurm"` costs nothing."""
    reason = _cluster_skip_reason()
    if reason:
        pytest.skip(reason)


def _config(wd: Path) -> Path:
    """The tiny e2e config, pinned to the CPU, with one GPU per training job (the cluster's stand-in GPU)."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg.setdefault("resources", {}).update(device="cpu", train_gpus=1)
    path = wd / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _snakemake_cmd(wd: Path, profile: str, *extra: str) -> list[str]:
    return [
        SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(wd),
        "--configfile",
        str(wd / "config.yaml"),
        "--profile",
        str(ROOT / "profiles" / profile),
        *extra,
    ]


def _jobs_in(wd: Path, since: str) -> list[dict]:
    """This run's Slurm jobs (allocations only), from accounting."""
    fields = ["JobID", "Partition", "Account", "State", "AllocTRES", "Comment", "WorkDir", "Timelimit"]
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-S", since, "-E", "now", "-o", ",".join(fields)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]
    return [r for r in rows if r["WorkDir"].rstrip("/") == str(wd)]


def _job_log(wd: Path, jobid: str) -> Path | None:
    logs = list((wd / ".snakemake" / "slurm_logs").rglob(f"{jobid}.log"))
    return logs[0] if logs else None


def _cells_in_log(text: str) -> list[str]:
    return sorted(set(re.findall(r"wildcards: cell=([0-9a-f]{12})", text)))


def _minutes(limit: str) -> int:
    days, _, hms = limit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days or 0) * 24 + h) * 60 + m + (s > 0)


def _cancel_first_training_job(wd: Path, stop: threading.Event, found: dict) -> None:
    """scancel the first training job once it runs a cell (its srun step has logged `localrule train:`)."""
    while not stop.is_set():
        out = subprocess.run(
            ["squeue", "-h", "-t", "RUNNING", "-p", GPU_PARTITION, "-o", "%i|%Z"], capture_output=True, text=True
        ).stdout
        for line in out.splitlines():
            jobid, _, workdir = line.partition("|")
            log = _job_log(wd, jobid) if workdir.rstrip("/") == str(wd) else None
            if log and "localrule train:" in log.read_text():
                time.sleep(1.0)  # inside the training step, not between cells
                subprocess.run(["scancel", jobid], check=True)
                found["jobid"] = jobid
                return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # Resolved: Slurm records the real path as the job's WorkDir, which is how this run's jobs are found.
    local_wd = tmp_path_factory.mktemp("local").resolve()
    slurm_wd = tmp_path_factory.mktemp("slurm").resolve()
    _config(local_wd)
    _config(slurm_wd)

    t0 = time.monotonic()
    local = subprocess.run(
        _snakemake_cmd(local_wd, "local", "--cores", "2"), capture_output=True, text=True, timeout=RUN_LIMIT_S
    )
    assert local.returncode == 0, f"local run failed:\n{local.stdout[-3000:]}\n{local.stderr[-5000:]}"
    local_s = time.monotonic() - t0

    env = dict(
        os.environ,
        SEGSWEEP_SLURM_ACCOUNT=ACCOUNT,
        SEGSWEEP_SLURM_PARTITION=CPU_PARTITION,
        SEGSWEEP_SLURM_GPU_PARTITION=GPU_PARTITION,
    )
    # Only test speed-ups on top of the profile: a 2 s first status check (default 40 s), kept job logs.
    cmd = _snakemake_cmd(
        slurm_wd,
        "slurm",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--group-components",
        f"cells={GROUP}",
    )
    since = (dt.datetime.now() - dt.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")
    t0 = time.monotonic()
    out, rc, cancelled = _run_beside(cmd, env, slurm_wd, _cancel_first_training_job, since=since)
    slurm_s = time.monotonic() - t0
    assert rc == 0, f"Slurm run failed ({rc}):\n{out[-8000:]}"
    print(f"local run {local_s:.0f}s, Slurm run {slurm_s:.0f}s")
    return {
        "local": local_wd,
        "slurm": slurm_wd,
        "out": out,
        "jobs": _jobs_in(slurm_wd, since),
        "cancelled": cancelled.get("jobid"),
    }


def test_every_rule_went_through_slurm_with_the_profiles_placement(runs):
    wd, jobs = runs["slurm"], runs["jobs"]
    assert jobs, "sacct lists no job of this run"
    # The plugin's --comment: rule_<rule>[_wildcards_<values>], or rule_<group>_<rules> for a group job.
    rules = {re.sub(r"_wildcards_.*$", "", re.sub(r"^rule_(cells_)?", "", j["Comment"])) for j in jobs}
    assert {"phantom", "ingest", "split", "train", "aggregate", "figures", "data_figures", "report"} <= rules, rules
    submitted = set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", SLURMCTLD_LOG.read_text()))
    for job in jobs:
        assert job["JobID"] in submitted, f"job {job['JobID']} not in {SLURMCTLD_LOG}"
        assert _job_log(wd, job["JobID"]) is not None, f"no .snakemake/slurm_logs/**/{job['JobID']}.log"
        assert job["Account"] == ACCOUNT, job  # not root's default account `ci`: the profile's -A went through
        if "train" in job["Comment"]:
            assert job["Partition"] == GPU_PARTITION and "gres/gpu=1" in job["AllocTRES"], job
        else:
            assert job["Partition"] == CPU_PARTITION and "gres/gpu" not in job["AllocTRES"], job
    assert re.search(r"submitted with SLURM jobid \d+", runs["out"])


def test_cells_are_packed_into_one_sbatch(runs):
    wd = runs["slurm"]
    packed = []
    for job in runs["jobs"]:
        if job["Comment"] == "rule_cells_train" and job["State"] == "COMPLETED":
            text = _job_log(wd, job["JobID"]).read_text()
            cells = _cells_in_log(text)
            if len(cells) > 1:
                packed.append(job["JobID"])
                assert len(cells) <= GROUP
                # One GPU and one core for the pack (cells run one after another), the runtimes summed.
                assert "gres/gpu=1," in job["AllocTRES"] and "cpu=1," in job["AllocTRES"], job
                # The log prints each cell's block twice (group job, then its srun step): key by cell.
                # (a `priority:` line may stand between the two: training rules have one, rules/common.smk)
                header = r"wildcards: cell=([0-9a-f]{12})\n(?:\s+priority: \d+\n)?\s+resources: .*?\bruntime=(\d+)"
                runtimes = dict(re.findall(header, text))
                assert sorted(runtimes) == cells, runtimes
                assert _minutes(job["Timelimit"]) == sum(map(int, runtimes.values())), (job, runtimes)
    assert packed, f"no Slurm job trained more than one cell: {runs['jobs']}"


def test_a_pack_trains_its_cells_in_one_worker_started_from_the_batch_step(runs):
    """Each cell of a pack is its own srun step; the pack's batch step started the job's worker spawner, which
    started the pack's one trainer worker, so the worker outlived the step of the cell that needed it first
    (under proctrack/cgroup too: tests/slurm/cluster.sh with SEGSWEEP_TEST_PROCTRACK=cgroup)."""
    wd, checked = runs["slurm"], []
    for job in runs["jobs"]:
        if job["Comment"] != "rule_cells_train" or job["State"] != "COMPLETED":
            continue
        text = _job_log(wd, job["JobID"]).read_text()  # the steps' stderr: each cell job's log lines
        pids = re.findall(r"trained in worker pid (\d+) \(slot 0, cell (\d+) of this worker\)", text)
        if len(pids) < 2:
            continue  # a pack whose other cells had finished before it was cancelled: nothing to share
        checked.append(job["JobID"])
        assert len({pid for pid, _ in pids}) == 1, pids  # one worker for the pack's cells...
        assert [int(n) for _, n in pids] == list(range(1, len(pids) + 1)), pids  # ...one after another
        started = re.findall(r"started a training worker \(pid (\d+), slot 0.*", text)
        assert len(started) == 1 and started[0] == pids[0][0], started
        # ...started by the spawner, a process of the batch step (no SLURM_STEP_ID), not by the first cell's step
        assert re.search(r"through the Slurm job's worker spawner \(pid \d+, step batch\)", text), text[-3000:]
    assert checked, f"no completed pack trained two cells: {runs['jobs']}"
    print(f"packs {checked} each trained in one worker ({_proctrack()})")


def _proctrack() -> str:
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    return re.search(r"ProctrackType\s*=\s*(\S+)", config)[1]


def test_cancelled_training_job_is_retried(runs):
    wd, jobid = runs["slurm"], runs["cancelled"]
    assert jobid, "the training job was never seen running: nothing was cancelled"
    job = next(j for j in runs["jobs"] if j["JobID"] == jobid)
    assert job["State"].startswith("CANCELLED"), job
    cancelled_cells = _cells_in_log(_job_log(wd, jobid).read_text())
    assert cancelled_cells
    later = [
        j
        for j in runs["jobs"]
        if "train" in j["Comment"] and j["State"] == "COMPLETED" and int(j["JobID"]) > int(jobid)
    ]
    redone = {c for j in later for c in _cells_in_log(_job_log(wd, j["JobID"]).read_text())}
    assert set(cancelled_cells) <= redone, (cancelled_cells, redone)
    for cell in cancelled_cells:
        # finished after the retry, with the outcome of the uninterrupted local run (tiny cells may collapse)
        retried = json.loads((wd / "results" / "cells" / cell / "metrics.json").read_text())
        local = json.loads((runs["local"] / "results" / "cells" / cell / "metrics.json").read_text())
        assert retried["status"] in {"ok", "collapsed"} and retried["status"] == local["status"], (retried, local)
        assert retried["best_val_dice"] == local["best_val_dice"]
    assert "Trying to restart job" in runs["out"]


def test_table_equals_the_local_run(runs):
    for name in ("table.csv", "table.json"):
        local = (runs["local"] / "results" / "studies" / "tiny" / name).read_text()
        slurm = (runs["slurm"] / "results" / "studies" / "tiny" / name).read_text()
        assert slurm == local, name
    cols = ["cell", "status", "best_val_dice", "best_epoch", "final_val_dice", "epochs_run"]
    local = pd.read_csv(runs["local"] / "results" / "studies" / "tiny" / "cells.csv")[cols].sort_values("cell")
    slurm = pd.read_csv(runs["slurm"] / "results" / "studies" / "tiny" / "cells.csv")[cols].sort_values("cell")
    pd.testing.assert_frame_equal(local.reset_index(drop=True), slurm.reset_index(drop=True))
    assert (runs["slurm"] / "reports" / "report.pdf").read_bytes().startswith(b"%PDF")


# ----------------------------------------------------------------- a time-limit warning / preemption signal
PREEMPT_STUDY = "preempt"


def _preempt_config(wd: Path) -> Path:
    """The tiny config with one cell long enough (5 steps x 40 epochs) to be signalled while it trains."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"].update(epochs=40, batch_size=2)
    cfg["studies"] = {
        PREEMPT_STUDY: {
            "title": "Preempted cell",
            "axes": {"optimizer": ["sgd"], "lr": [0.01]},
            "table": {"rows": ["optimizer"], "cols": ["lr"]},
        }
    }
    cfg.setdefault("resources", {}).update(device="cpu", train_gpus=1)
    path = wd / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _signal_training_job(wd: Path, stop: threading.Event, found: dict) -> None:
    """`scancel --signal=TERM` (all job steps, not the batch shell: what the profile's --signal=TERM@120 sends)
    to the running training job once its cell has finished an epoch (history.csv written)."""
    while not stop.is_set():
        out = subprocess.run(
            ["squeue", "-h", "-t", "RUNNING", "-p", GPU_PARTITION, "-o", "%i|%Z"], capture_output=True, text=True
        ).stdout
        for line in out.splitlines():
            jobid, _, workdir = line.partition("|")
            histories = list((wd / "results" / "cells").glob("*/history.csv"))
            if workdir.rstrip("/") == str(wd) and histories:
                subprocess.run(["scancel", "--signal=TERM", jobid], check=True)
                found.update(jobid=jobid, cell=histories[0].parent.name)
                return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def preempted(tmp_path_factory):
    local_wd = tmp_path_factory.mktemp("preempt-local").resolve()
    slurm_wd = tmp_path_factory.mktemp("preempt-slurm").resolve()
    _preempt_config(local_wd)
    _preempt_config(slurm_wd)
    target = f"results/studies/{PREEMPT_STUDY}/table.csv"  # the table; no figures, no report
    local = subprocess.run(
        _snakemake_cmd(local_wd, "local", "--cores", "2", target), capture_output=True, text=True, timeout=RUN_LIMIT_S
    )
    assert local.returncode == 0, f"local run failed:\n{local.stdout[-3000:]}\n{local.stderr[-5000:]}"

    env = dict(
        os.environ,
        SEGSWEEP_SLURM_ACCOUNT=ACCOUNT,
        SEGSWEEP_SLURM_PARTITION=CPU_PARTITION,
        SEGSWEEP_SLURM_GPU_PARTITION=GPU_PARTITION,
    )
    cmd = _snakemake_cmd(
        slurm_wd, "slurm", "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs", target
    )
    since = (dt.datetime.now() - dt.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")
    out, rc, signalled = _run_beside(cmd, env, slurm_wd, _signal_training_job, since)
    assert rc == 0, f"Slurm run failed ({rc}):\n{out[-8000:]}"
    return {"local": local_wd, "slurm": slurm_wd, "out": out, "jobs": _jobs_in(slurm_wd, since), **signalled}


def test_signalled_training_job_saves_mid_epoch_and_its_retry_resumes(preempted):
    wd, jobid, cell = preempted["slurm"], preempted.get("jobid"), preempted.get("cell")
    assert jobid, "the training job was never seen training: nothing was signalled"
    # The job still RUNNING when its training process stopped (a --signal warning, not a cancel): it requeued
    # itself, and ran again as the same job id; Snakemake saw no failure, so it retried nothing.
    runs = subprocess.run(
        ["sacct", "-D", "-X", "-j", jobid, "-P", "-n", "-o", "State"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert runs == ["REQUEUED", "COMPLETED"], runs
    assert "Trying to restart job" not in preempted["out"]
    text = _job_log(wd, jobid).read_text()  # both runs: the profile's --open-mode=append
    m = re.search(
        r"SIGTERM: preempted at epoch (\d+) step (\d+)/(\d+); last\.pt written; exiting for the retry "
        r"\(a stop, not a crash: 0 of 2 crash attempts used\)",
        text,
    )
    assert m, text[-4000:]
    assert "Traceback" not in text
    after = text[m.end() :]
    assert f"requeued Slurm job {jobid} (requeue 1)" in after
    epoch, step, n_steps = int(m[1]), int(m[2]), int(m[3])
    resumed = f"inside epoch {epoch}, after step {step}/{n_steps}" if step else f"after epoch {epoch - 1}"
    # the requeued run: Snakemake's attempt 1 again, crash attempt 1 (a stop is not a crash)
    assert re.search(rf"attempt=1, max_attempts=2.*?resuming from \S+last\.pt {resumed}", after, re.S), after[-4000:]
    assert "crash attempt 1 of 2" in after
    assert f"epoch {epoch}/40 " in after and "epoch 1/40 " not in after  # went on inside, redid nothing

    # the numbers of the uninterrupted local run: the table, the cell's metrics and its every epoch
    for name in ("table.csv", "table.json"):
        local = (preempted["local"] / "results" / "studies" / PREEMPT_STUDY / name).read_text()
        assert (wd / "results" / "studies" / PREEMPT_STUDY / name).read_text() == local, name
    strip = ("wall_s", "hardware")
    ours = json.loads((wd / "results" / "cells" / cell / "metrics.json").read_text())
    theirs = json.loads((preempted["local"] / "results" / "cells" / cell / "metrics.json").read_text())
    assert {k: v for k, v in ours.items() if k not in strip} == {k: v for k, v in theirs.items() if k not in strip}
    hist = lambda d: pd.read_csv(d / "results" / "cells" / cell / "history.csv").drop(columns="epoch_s")  # noqa: E731
    pd.testing.assert_frame_equal(hist(wd), hist(preempted["local"]))
    print(f"signalled at epoch {epoch} step {step}/{n_steps}")


# ------------------------------------------------------------------------ a config edited during the run
EDIT_STUDY = "edited"


def _edit_config(wd: Path, epochs: int) -> Path:
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"].update(epochs=epochs)
    cfg["studies"] = {
        EDIT_STUDY: {
            "title": "Config edited mid-run",
            "axes": {"optimizer": ["adam"], "lr": [0.001, 0.01]},
            "table": {"rows": ["optimizer"], "cols": ["lr"]},
        }
    }
    cfg.setdefault("resources", {}).update(device="cpu", train_gpus=1)
    path = wd / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _run_beside(cmd: list, env: dict, slurm_wd: Path, action, since: str | None = None) -> tuple[str, int, dict]:
    """Run a Slurm Snakemake command while ``action(slurm_wd, stop, found)`` acts on it from a thread (signals a
    training job, edits the config, cancels a pack); returns its output, exit code and what the action
    recorded. Jobs of the run (submitted after ``since``) left pending or running are cancelled."""
    since = since or (dt.datetime.now() - dt.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")
    stop, found = threading.Event(), {}
    side = threading.Thread(target=action, args=(slurm_wd, stop, found), daemon=True)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    side.start()
    try:
        out, _ = proc.communicate(timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired:
        # ONE SIGINT makes Snakemake scancel its jobs and exit; a second one (as `timeout` sends to a process
        # group) would interrupt that cancellation. SIGTERM does not stop a polling Snakemake.
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"Slurm run exceeded {RUN_LIMIT_S}s:\n{out[-6000:]}")
    finally:
        stop.set()
        side.join(timeout=10)
        leftover = [j["JobID"] for j in _jobs_in(slurm_wd, since) if j["State"] in {"PENDING", "RUNNING"}]
        if leftover:
            subprocess.run(["scancel", *leftover])
    return out, proc.returncode, found


def _edit_when_training_is_queued(wd: Path, stop: threading.Event, found: dict) -> None:
    """Edit the config (epochs 6 → 3: new cell ids) the moment a training job of this run is in the queue,
    before its job step starts parsing the config (Snakemake's start-up takes seconds)."""
    while not stop.is_set():
        out = subprocess.run(["squeue", "-h", "-p", GPU_PARTITION, "-o", "%i|%Z"], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            jobid, _, workdir = line.partition("|")
            if workdir.rstrip("/") == str(wd):
                _edit_config(wd, epochs=3)
                found.update(jobid=jobid)
                return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    local_wd = tmp_path_factory.mktemp("edit-local").resolve()
    slurm_wd = tmp_path_factory.mktemp("edit-slurm").resolve()
    _edit_config(local_wd, epochs=6)
    _edit_config(slurm_wd, epochs=6)
    target = f"results/studies/{EDIT_STUDY}/table.csv"
    local = subprocess.run(
        _snakemake_cmd(local_wd, "local", "--cores", "2", target), capture_output=True, text=True, timeout=RUN_LIMIT_S
    )
    assert local.returncode == 0, f"local run failed:\n{local.stdout[-3000:]}\n{local.stderr[-5000:]}"
    env = dict(
        os.environ,
        SEGSWEEP_SLURM_ACCOUNT=ACCOUNT,
        SEGSWEEP_SLURM_PARTITION=CPU_PARTITION,
        SEGSWEEP_SLURM_GPU_PARTITION=GPU_PARTITION,
    )
    env.pop("SEGSWEEP_PLANNED_CONFIG", None)
    cmd = _snakemake_cmd(
        slurm_wd, "slurm", "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs", target
    )
    out, rc, found = _run_beside(cmd, env, slurm_wd, _edit_when_training_is_queued)
    return {"local": local_wd, "slurm": slurm_wd, "out": out, "rc": rc, **found}


def test_config_edited_while_the_run_goes_on(edited):
    """The issue's row: every cell's step re-read the edited file (`KeyError: '<cell id>'`), cells failed on
    both attempts. Now each job parses the config the run was planned with: the run finishes with the table
    of an unedited local run, and the training log keeps its attempt header."""
    wd = edited["slurm"]
    assert edited.get("jobid"), "no training job was seen in the queue: the config was never edited"
    assert "epochs: 3" in (wd / "config.yaml").read_text()
    assert edited["rc"] == 0, f"Slurm run failed ({edited['rc']}):\n{edited['out'][-8000:]}"
    logs = "".join(p.read_text() for p in (wd / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert "KeyError" not in logs and "InputFunctionException" not in logs
    assert "segsweep: the config differs from the one this run was planned with" in logs
    for name in ("table.csv", "table.json"):
        local = (edited["local"] / "results" / "studies" / EDIT_STUDY / name).read_text()
        assert (wd / "results" / "studies" / EDIT_STUDY / name).read_text() == local, name
    cells = sorted(p.parent.name for p in (wd / "results" / "cells").glob("*/metrics.json"))
    assert cells == sorted(p.parent.name for p in (edited["local"] / "results" / "cells").glob("*/metrics.json"))
    for cell in cells:
        m = json.loads((wd / "results" / "cells" / cell / "metrics.json").read_text())
        assert m["params"]["epochs"] == 6 and m["epochs_run"] == 6
        assert "==== rule train: attempt 1 of 2 ====" in (wd / "logs" / "train" / f"{cell}.log").read_text()


# ------------------------------------------------------------------- a pack whose second cell is stopped
PACK_STUDY = "pack"


def _pack_config(wd: Path) -> Path:
    """Two cells of different lengths, packed into one Slurm job."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"].update(batch_size=2)
    cfg["studies"] = {
        PACK_STUDY: {
            "title": "A pack whose second cell is stopped",
            "axes": {"optimizer": ["adam"], "epochs": [8, 30]},
            "table": {"rows": ["optimizer"], "cols": ["epochs"]},
        }
    }
    cfg.setdefault("resources", {}).update(device="cpu", train_gpus=1)
    path = wd / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _on_pack_after_one_cell(command: str, poll_s: float):
    """A side action for `_run_beside`: ``command`` (scancel, or `scontrol requeue` as an admin or
    PreemptMode=REQUEUE does) on the run's pack once one of its cells has finished (metrics.json) and the
    other trains (history.csv)."""

    def act(wd: Path, stop: threading.Event, found: dict) -> None:
        cells = wd / "results" / "cells"
        while not stop.is_set():
            done = [p.parent.name for p in cells.glob("*/metrics.json")]
            training = [p.parent.name for p in cells.glob("*/history.csv") if p.parent.name not in done]
            if done and training:
                out = subprocess.run(
                    ["squeue", "-h", "-t", "RUNNING", "-p", GPU_PARTITION, "-o", "%i|%Z"],
                    capture_output=True,
                    text=True,
                ).stdout
                for line in out.splitlines():
                    jobid, _, workdir = line.partition("|")
                    if workdir.rstrip("/") == str(wd):
                        subprocess.run([*command.split(), jobid], check=True)
                        found.update(jobid=jobid, finished=done[0], stopped=training[0])
                        return
            time.sleep(poll_s)

    return act


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    local_wd = tmp_path_factory.mktemp("pack-local").resolve()
    slurm_wd = tmp_path_factory.mktemp("pack-slurm").resolve()
    _pack_config(local_wd)
    _pack_config(slurm_wd)
    target = f"results/studies/{PACK_STUDY}/table.csv"
    local = subprocess.run(
        _snakemake_cmd(local_wd, "local", "--cores", "2", target), capture_output=True, text=True, timeout=RUN_LIMIT_S
    )
    assert local.returncode == 0, f"local run failed:\n{local.stdout[-3000:]}\n{local.stderr[-5000:]}"
    env = dict(
        os.environ,
        SEGSWEEP_SLURM_ACCOUNT=ACCOUNT,
        SEGSWEEP_SLURM_PARTITION=CPU_PARTITION,
        SEGSWEEP_SLURM_GPU_PARTITION=GPU_PARTITION,
    )
    cmd = _snakemake_cmd(
        slurm_wd,
        "slurm",
        target,  # before --group-components, which takes every value after it
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--group-components",
        "cells=2",
    )
    out, rc, found = _run_beside(cmd, env, slurm_wd, _on_pack_after_one_cell("scancel", 0.05))
    return {"local": local_wd, "slurm": slurm_wd, "out": out, "rc": rc, **found}


def test_a_finished_cell_of_a_failed_pack_is_restored_not_redone(pack):
    """Snakemake removes the finished cell's metrics.json with its cancelled pack; the pack's rerun restores it
    from the run's copy (no data load, no evaluation) and finishes the other cell: the local run's table."""
    wd, finished = pack["slurm"], pack.get("finished")
    assert pack.get("jobid"), "the pack was never seen with one cell done and one training: nothing was cancelled"
    assert pack["rc"] == 0, f"Slurm run failed ({pack['rc']}):\n{pack['out'][-8000:]}"
    assert re.search(
        rf"Removing output files of failed job.*?results/cells/{finished}/metrics\.json", pack["out"], re.S
    )
    logs = "".join(p.read_text() for p in (wd / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert f"cell {finished} finished earlier in this snakemake run" in logs, logs[-4000:]
    log = (wd / "logs" / "train" / f"{finished}.log").read_text()
    assert log.count("epoch 1/8 ") == 1  # trained once, however many times its pack ran
    # the row "scancel of a pack": one command, rc 0, and no crash attempt used (a stop is not a crash)
    for cell in (finished, pack["stopped"]):
        assert not (wd / "results" / "cells" / cell / "attempts.json").exists(), cell
    assert "crash attempts used)" in (wd / "logs" / "train" / f"{pack['stopped']}.log").read_text()
    for name in ("table.csv", "table.json"):
        local = (pack["local"] / "results" / "studies" / PACK_STUDY / name).read_text()
        assert (wd / "results" / "studies" / PACK_STUDY / name).read_text() == local, name


# ------------------------------------------- time limits and a requeue: one invocation, nothing failed (issue 26)
LIMITS_STUDY = "limits"
# At 32x32 on this 2-core machine an epoch takes 0.07-0.2 s (idle-loaded): the long cell needs more than the
# ~75 s of training a 2-minute pack leaves (30 s margin, start-up), even on an idle machine, so its pack is
# stopped by its time limit whichever cell the pack trains first.
SHORT_EPOCHS, LONG_EPOCHS = 60, 1500


def _limits_config(wd: Path) -> Path:
    """Two cells packed into one job of 2 x 1 minute: the short one finishes in the first run, the long one
    needs about three (an outside `scontrol requeue`, then its time limit, then it finishes)."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["train"].update(batch_size=2)
    cfg["studies"] = {
        LIMITS_STUDY: {
            "title": "Cells longer than their time limit",
            "axes": {"optimizer": ["sgd"], "epochs": [SHORT_EPOCHS, LONG_EPOCHS]},
            "table": {"rows": ["optimizer"], "cols": ["epochs"]},
        }
    }
    cfg.setdefault("resources", {}).update(device="cpu", train_gpus=1, train_runtime_min=1)
    path = wd / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def limits(tmp_path_factory):
    local_wd = tmp_path_factory.mktemp("limits-local").resolve()
    slurm_wd = tmp_path_factory.mktemp("limits-slurm").resolve()
    _limits_config(local_wd)
    _limits_config(slurm_wd)
    target = f"results/studies/{LIMITS_STUDY}/table.csv"
    # the uninterrupted reference runs beside the Slurm run (one core each), which is mostly waiting
    local = subprocess.Popen(
        _snakemake_cmd(local_wd, "local", "--cores", "1", target),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    env = dict(
        os.environ,
        SEGSWEEP_SLURM_ACCOUNT=ACCOUNT,
        SEGSWEEP_SLURM_PARTITION=CPU_PARTITION,
        SEGSWEEP_SLURM_GPU_PARTITION=GPU_PARTITION,
    )
    cmd = _snakemake_cmd(
        slurm_wd,
        "slurm",
        target,
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--group-components",
        "cells=2",
    )
    t0 = time.monotonic()
    out, rc, found = _run_beside(cmd, env, slurm_wd, _on_pack_after_one_cell("scontrol requeue", 0.1))
    slurm_s = time.monotonic() - t0
    local_out, _ = local.communicate(timeout=RUN_LIMIT_S)
    assert local.returncode == 0, f"local run failed:\n{local_out[-5000:]}"
    print(f"Slurm run with time limits: {slurm_s:.0f} s")
    return {"local": local_wd, "slurm": slurm_wd, "out": out, "rc": rc, "seconds": slurm_s, **found}


def _runs_of(jobid: str) -> list[str]:
    """The state of each run of a Slurm job (a requeued job has one row per run)."""
    return subprocess.run(
        ["sacct", "-D", "-X", "-j", jobid, "-P", "-n", "-o", "State"], capture_output=True, text=True, check=True
    ).stdout.split()


def test_cells_needing_several_time_limits_finish_in_one_invocation(limits):
    """The issue's rows: a time limit (`train_runtime_min: 1`) and `scontrol requeue` of a pack. One command
    finishes with rc 0; the pack was requeued (an outside requeue, then its own before its time limit), never
    failed, never TIMEOUT, never resubmitted by Snakemake; its finished cell was never retrained; the tables
    are the uninterrupted run's."""
    wd, jobid = limits["slurm"], limits.get("jobid")
    assert jobid, "the pack was never seen with one cell done and one training: nothing was requeued"
    assert limits["rc"] == 0, f"Slurm run failed ({limits['rc']}):\n{limits['out'][-8000:]}"
    out = limits["out"]
    assert "Trying to restart job" not in out and "Removing output files of failed job" not in out
    runs = _runs_of(jobid)
    assert runs[-1] == "COMPLETED" and set(runs[:-1]) == {"REQUEUED"} and len(runs) >= 3, runs
    # which cell of the pack trains first is Snakemake's choice: the one running at the outside requeue was stopped
    logs = {c: (wd / "logs" / "train" / f"{c}.log").read_text() for c in (limits["finished"], limits["stopped"])}
    both = "".join(logs.values())
    # the outside requeue's signal: a mid-epoch stop; under proctrack/cgroup Slurm first kills the pack's worker
    # with the batch step, and its cell's job counts a stop without a mid-epoch last.pt (docs/slurm.md)
    stops = [logs[limits["stopped"]].count(s) for s in ("SIGTERM: preempted at epoch", "ended before it saved")]
    assert stops in ([[1, 0], [0, 1]] if _proctrack() == "proctrack/cgroup" else [[1, 0]]), stops
    assert both.count("SIGALRM: preempted at epoch") >= 1  # stopped before the time limit, by the job itself
    assert both.count("requeued Slurm job") == len(runs) - 2  # its own requeues (the outside one was Slurm's)
    assert "0 of 2 crash attempts used" in both and "1 of 2 crash attempts used" not in both
    for cell, text in logs.items():
        epochs = json.loads((wd / "results" / "cells" / cell / "metrics.json").read_text())["params"]["epochs"]
        assert text.count(f"epoch 1/{epochs} ") == 1 and f"epoch {epochs}/{epochs} " in text, cell
    # the cell that had finished when the pack was requeued: restored in each later run, never retrained
    assert f"cell {limits['finished']} finished earlier in this snakemake run" in logs[limits["finished"]]
    # in each later run its job found metrics.json kept (update()): no Snakemake removed it, not even the pack's own
    assert "its pack ran again: kept" in logs[limits["finished"]] and "restored from" not in logs[limits["finished"]]
    for name in ("table.csv", "table.json"):
        local = (limits["local"] / "results" / "studies" / LIMITS_STUDY / name).read_text()
        assert (wd / "results" / "studies" / LIMITS_STUDY / name).read_text() == local, name
    print(f"pack {jobid}: runs {runs}, {limits['seconds']:.0f} s")


def test_no_training_job_overran_its_time_limit(limits):
    """The issue's row "cells finishing near the limit": a job stops its cell train_stop_margin_s (at most a
    quarter of the limit) before the limit, so no run of any training job of the study ended TIMEOUT."""
    jobs = [j for j in _jobs_in(limits["slurm"], "now-1days") if "train" in j["Comment"]]
    assert jobs
    for job in jobs:
        assert "TIMEOUT" not in _runs_of(job["JobID"]) and "FAILED" not in _runs_of(job["JobID"]), job

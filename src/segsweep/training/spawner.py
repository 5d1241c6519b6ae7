"""The worker spawner of a Slurm job: starts the job's trainer workers from the batch step, so that they
outlive the job steps of the cells that use them.

Why: the Slurm jobstep plugin runs each cell of a pack as its own ``srun`` step. Under
``ProctrackType=proctrack/cgroup`` (what real clusters use) Slurm kills every process of a step when the step
ends, a detached one included, so a trainer worker (`segsweep.training.worker`) started by a cell's job dies
with that cell and every cell of the pack pays the worker's start-up again. A process of the *batch step*
lives as long as the job (Slurm kills it at the job's end, or at a requeue), so a worker started from there
is reused by the pack's later steps under any process tracking.

How. The batch step's Snakemake parses the Snakefile once; there (`start_for_batch_step`, called from
rules/common.smk) it starts this module as a small detached process listening on
``spawner-<job>-<pid>.sock`` in the worker base directory and records that path in ``SEGSWEEP_WORKER_SPAWNER``,
which the job steps inherit (the jobstep plugin and srun pass the environment on). A cell's client that
finds no worker for its slot asks the spawner (`spawn`) to start it: the request carries the worker's
command line, environment (the client's, with the slot's GPU), working directory and log file, and the
spawner replies with the worker's pid. Without a spawner (a local run, a Slurm job whose batch step started
none, a spawner that has gone) the client starts the worker itself, as before.

The spawner imports only the standard library (a Snakefile parse must not import torch). It reaps the
workers it started and exits when its parent (the batch step's Snakemake) has gone: the job is over. The
socket's directory is private to the user (mode 700), so only the job's own user can ask it to start
anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("segsweep.worker")

ENV = "SEGSWEEP_WORKER_SPAWNER"  # the spawner's socket, for the job steps
PROTOCOL = 1
START_TIMEOUT_S = 30.0  # the spawner imports only the standard library: well under a second
POLL_S = 0.5  # how often the spawner reaps its workers and looks for its parent
# Slurm's id of the batch step (SLURM_BATCH_SCRIPT); the batch step's environment has no SLURM_STEP_ID in 22.05
BATCH_STEP_ID = "4294967291"
TRAINING_RULES = frozenset({"train", "train_rung"})
# Why a spawner of a job with several GPUs starts no GPU worker: where Slurm constrains devices (cgroup), a step
# numbers the GPUs it was given from 0, the batch step numbers all of the job's, so "GPU 0" of a step need not
# be GPU 0 of the batch step. With one GPU both name the same device.
SEVERAL_GPUS = "the job has several GPUs, and a step's GPU numbers need not be the batch step's"


class Started(NamedTuple):
    socket: Path
    pid: int


def worker_base() -> Path:
    """The node-local parent of every worker directory (`segsweep.training.worker.worker_dir`):
    ``SEGSWEEP_WORKER_DIR``, default ``$TMPDIR/segsweep-workers-<uid>`` (short enough for a Unix socket path)."""
    base = os.environ.get("SEGSWEEP_WORKER_DIR") or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"segsweep-workers-{os.getuid()}"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def in_slurm_batch_step(environ: Mapping[str, str] = os.environ) -> bool:
    """This process runs in a Slurm job's batch step, not in one of its ``srun`` steps: ``SLURM_JOB_ID`` is
    set and ``SLURM_STEP_ID`` is unset (Slurm 22.05, checked on tests/slurm's cluster) or the batch step's id."""
    return bool(environ.get("SLURM_JOB_ID")) and (environ.get("SLURM_STEP_ID") or BATCH_STEP_ID) == BATCH_STEP_ID


def start_for_batch_step(
    target_rules: Iterable[str], worker: bool, notify: Callable[[str], None] = log.warning
) -> Started | None:
    """Start the job's spawner when this is a Slurm batch step whose target jobs include training jobs with
    the trainer worker on (``worker``, config ``resources.worker``); once per process. None otherwise, and
    when it fails to start (``notify`` says why): each cell's job then starts its worker itself, as before."""
    global _started
    if _started is not None or not (worker and in_slurm_batch_step() and TRAINING_RULES & set(target_rules)):
        return None
    try:
        _started = start(f"{os.environ['SLURM_JOB_ID']}-{os.getpid()}")
    except (OSError, RuntimeError) as exc:
        notify(f"no trainer worker spawner ({exc}): each cell's job step starts its own worker")
    return _started


_started: Started | None = None  # this process's spawner: a Snakefile parsed twice starts one


def target_rules(argv: list[str]) -> set[str]:
    """The rules of the jobs a job invocation of Snakemake runs: its ``--target-jobs rule:wildcards ...``
    arguments (as the executor plugins write them). Read from the command line because the Snakefile is
    parsed before Snakemake sets its DAG settings, and the ``onstart`` hook does not run in job invocations."""
    rules, taking = set(), False
    for arg in argv:
        if arg == "--target-jobs":
            taking = True
        elif arg.startswith("-"):
            taking = False
        elif taking:
            rules.add(arg.split(":", 1)[0])
    return rules


def start(name: str) -> Started:
    """Start a spawner (``spawner-<name>.sock``, its log ``spawner-<name>.log`` beside it) as a detached child
    of this process, wait until it listens, and record its socket in ``SEGSWEEP_WORKER_SPAWNER``. It exits
    once this process has ended."""
    base = worker_base()
    _remove_stale_sockets(base)
    path = base / f"spawner-{name}.sock"
    path.unlink(missing_ok=True)
    with open(base / f"spawner-{name}.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segsweep.training.spawner", str(path), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=out,  # not this process's stdout: a reader waiting for its end would wait for the spawner's
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
            start_new_session=True,  # Ctrl-C / SIGINT to this Snakemake's process group is not the spawner's
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker spawner exited at start ({proc.returncode}); its log: {out.name}")
        if _connectable(path):
            os.environ[ENV] = str(path)
            return Started(path, proc.pid)
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"the worker spawner did not start within {START_TIMEOUT_S:.0f} s; its log: {out.name}")


def _remove_stale_sockets(base: Path, min_age_s: float = 60.0) -> None:
    """Spawners ended by their job's end (SIGKILL under proctrack/cgroup) leave their socket files; remove those
    nothing listens on. Only old ones: a spawner of another job may be between its bind and its listen."""
    for old in base.glob("spawner-*.sock"):
        with contextlib.suppress(OSError):
            if time.time() - old.lstat().st_mtime > min_age_s and not _connectable(old):
                old.unlink()


def _pythonpath() -> str:
    src = str(Path(__file__).resolve().parents[2])  # the in-repo package, also under --use-conda
    return src + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")


def _connectable(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(str(path))
        except OSError:
            return False
    return True


# ------------------------------------------------------------------------------------------ client
def spawn(sock: str | Path, argv: list[str], env: Mapping[str, str], cwd: str, log_path: Path) -> dict | None:
    """Ask the spawner at ``sock`` to start ``argv`` (environment ``env``, in ``cwd``, output to ``log_path``);
    its reply: ``{"pid": the new process, "spawner": {"pid", "job", "step"}}``, ``{"declined": why}`` (a GPU
    worker in a job with several GPUs: `SEVERAL_GPUS`), or None when no spawner answers there; in both the
    caller starts the process itself."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(START_TIMEOUT_S)
        conn.connect(str(sock))
        request = {"protocol": PROTOCOL, "argv": argv, "env": dict(env), "cwd": cwd, "log": str(log_path)}
        send_line(conn, request)
        reply = next(read_lines(conn), None)
    except (OSError, ValueError):
        return None
    finally:
        conn.close()
    if reply is None:  # the spawner closed without a reply
        return None
    if "error" in reply:
        raise RuntimeError(f"the worker spawner could not start the worker: {reply['error']}")
    return reply


def send_line(conn: socket.socket, obj: Mapping, lock: threading.Lock | None = None) -> None:
    """``obj`` as one JSON line: the framing of the spawner's and the trainer workers' sockets (worker.py)."""
    data = (json.dumps(obj, default=str) + "\n").encode()
    with lock or contextlib.nullcontext():
        conn.sendall(data)


def read_lines(conn: socket.socket) -> Iterator[dict]:
    """The JSON lines ``conn`` receives (`send_line`), until it closes."""
    buf = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


# ------------------------------------------------------------------------------------------ server
class Spawner:
    """The server side (module doc): one request per connection; exits when its parent ``parent_pid`` has gone."""

    def __init__(self, sock_path: Path, parent_pid: int):
        self.sock_path, self.parent_pid = Path(sock_path), int(parent_pid)
        self.children: list[subprocess.Popen] = []
        step = os.environ.get("SLURM_STEP_ID")
        self.facts = {"pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID"), "step": step or "batch"}
        # the job's GPUs as this step sees them (Slurm sets CUDA_VISIBLE_DEVICES; "-1" or "" hides them all)
        self.gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip() not in ("", "-1")]

    def serve(self) -> None:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(self.sock_path))
        inode = self.sock_path.stat().st_ino
        srv.listen(16)
        srv.settimeout(POLL_S)
        log.info("spawner pid %d (Slurm job %s, step %s) listening", os.getpid(), self.facts["job"], self.facts["step"])
        try:
            while os.getppid() == self.parent_pid:  # reparented: the batch step's Snakemake has ended
                self.children = [c for c in self.children if c.poll() is None]  # reap: no zombie reads as alive
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                with conn:
                    self._serve_one(conn)
            log.info("parent %d has ended: exiting (%d workers still running)", self.parent_pid, len(self.children))
        finally:
            srv.close()
            # a later spawner of the same job (a requeue) may have bound the path since: leave its socket
            with contextlib.suppress(FileNotFoundError):
                if self.sock_path.stat().st_ino == inode:
                    self.sock_path.unlink()

    def _serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(10.0)
        try:
            request = next(read_lines(conn), None)
            if request is None:
                raise ValueError("no request before the connection closed")
            if request.get("protocol") != PROTOCOL:
                raise ValueError(f"protocol {request.get('protocol')!r}, this spawner speaks {PROTOCOL}")
            if len(self.gpus) > 1 and request["env"].get("CUDA_VISIBLE_DEVICES"):
                send_line(conn, {"declined": SEVERAL_GPUS})
                return
            with open(request["log"], "ab") as out:
                proc = subprocess.Popen(
                    [str(a) for a in request["argv"]],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={str(k): str(v) for k, v in request["env"].items()},
                    cwd=request["cwd"],
                    start_new_session=True,  # as a worker started by its client: signals to the spawner stay its own
                )
            self.children.append(proc)
            reply: dict = {"pid": proc.pid, "spawner": self.facts}
            log.info("started pid %d: %s", proc.pid, " ".join(map(str, request["argv"][1:3])))
        except Exception as exc:  # noqa: BLE001 - a bad request is the client's error, the spawner goes on
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            send_line(conn, reply)


def main(argv: list[str] | None = None) -> int:
    sock_path, parent_pid = sys.argv[1:] if argv is None else argv  # as `start` starts it
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Spawner(Path(sock_path), int(parent_pid)).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

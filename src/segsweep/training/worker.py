"""Trainer workers: the heavy process (torch, ``torch._dynamo``, the CUDA context, cuDNN's autotuning cache) is
started once per slot and reused by the training jobs that run there, one cell at a time.

Why: a cell's own work on a GPU is seconds; a fresh process per cell pays Python + torch imports, the
``torch._dynamo`` import that every ``Optimizer.step`` triggers, CUDA initialisation and autotuning again,
every time (docs/architecture.md, "Trainer workers", has the measurements).

How. Snakemake still runs one ``train`` (or rung) job per cell, with its outputs, retries and statuses
(`segsweep.training.job`). With ``resources.worker: true`` that job is a thin client: it takes a **slot**
(an ``flock`` on ``slot-<i>.lock`` in the worker directory, the lowest free ``i``), connects to that slot's
worker over a Unix socket (``slot-<i>.sock``), starting it if none listens, and hands it the call
``train_cell(...)`` as one JSON line. The worker runs it in its main thread and streams the cell's log
records back; the client writes them to the job's log, then gets the result or the error:

* a user error (`SegsweepError`) or a preemption comes back as that exception, a crash as `WorkerCrash`,
  so `job.run_attempt` retries, records ``failed`` or stops exactly as for a job that trains in-process;
* a crash is one cell's: the worker catches it and serves the next cell (a worker that dies outright,
  e.g. a segfault, ends only the cell it was training: its client sees the socket close, raises
  `WorkerCrash`, and the retry starts a fresh worker; a stop, `WorkerLostOnStop`, when the client had passed
  a stop signal on or its Slurm job is ending: a job's cancel or requeue ends the batch step's workers);
* SIGTERM / SIGUSR1 to the client (Slurm's time limit, ``scancel``) is forwarded as a stop request; the
  cell writes its mid-epoch ``last.pt`` and the client exits with ``EXIT_PREEMPTED`` as before. A client
  killed outright (kill -9) closes the socket: the worker takes that as a stop request too, so the cell
  checkpoints and the worker is free for the retry. SIGTERM to the worker itself stops its cell the same
  way and then ends the worker.
* Two workers never train one cell at once: the worker holds ``<cell>/.train.lock`` while it trains.

Who starts a worker: in a Slurm job whose batch step started a worker spawner (`segsweep.training.spawner`),
the spawner, so the worker lives as long as the job and not as long as the cell's ``srun`` step (under
``proctrack/cgroup`` Slurm ends every process of a step with it); otherwise the client itself, detached.

Slots and GPUs: at most as many workers as Snakemake runs training jobs at once (its ``--cores`` and ``gpu``
limits decide that, as for in-process jobs); slot ``i`` gets GPU ``i mod n`` of the visible ones
(``CUDA_VISIBLE_DEVICES``, else ``/dev/nvidia<k>``), so ``--resources gpu=K·n`` trains K cells per GPU. A
worker ends after ``resources.worker_idle_s`` without a cell. The worker directory is keyed by the code
(every segsweep source file's size and mtime, the interpreter, the installed torch), the environment variables
torch and CUDA read, the working directory and the job's GPUs and Slurm job, so an edited checkout or an
upgraded torch never talks to a worker holding the old code.

Numbers: a worker trains one cell at a time and `loop.train_cell` seeds every generator it uses at the
start of each cell, so a cell trained in a worker, after other cells, gives the same history.csv and
metrics.json as a cell trained in its own process (tests/test_worker.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from segsweep.errors import Preempted, SegsweepError
from segsweep.training import preempt, slurm_job
from segsweep.training import spawner as spawners
from segsweep.training.params import CellParams
from segsweep.training.record import CellMetrics

log = logging.getLogger("segsweep.worker")

PROTOCOL = 1
MAX_SLOTS = 256
START_TIMEOUT_S = 120.0  # a cold worker imports torch and the training code (seconds; minutes on a slow FS)
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/segsweep
# environment variables read by torch, CUDA, cuDNN / cuBLAS and the OpenMP / MKL thread pools
ENV_PREFIXES = ("CUDA_", "CUBLAS_", "CUDNN_", "PYTORCH_", "TORCH_", "NVIDIA_TF32", "OMP_", "MKL_", "KMP_")


class WorkerCrash(RuntimeError):
    """The worker could not train the cell: its exception (with the worker's traceback), or the worker
    ended. An ordinary crash for `segsweep.training.job.run_attempt`: retried, then recorded ``failed``;
    ``crash_reason`` is what an in-process crash would record (``RuntimeError: ...``)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.crash_reason = reason or f"WorkerCrash: {message}"


class WorkerLostOnStop(Preempted):
    """A stop signal was passed on to the worker, or the Slurm job is ending, and the worker ended before it
    replied. Where: under
    ``proctrack/cgroup`` a Slurm job's cancel or requeue signals only its batch step's shell, which dies at once,
    and Slurm then kills every process of the batch step, the worker its spawner started included
    (`segsweep.training.spawner`), before the cell can save mid-epoch. A stop all the same, not a crash: the
    retry resumes from the cell's latest ``last.pt`` (the last epoch's, not a mid-epoch one)."""

    def __init__(self, signum: int, slot: int):
        super().__init__(signum, 0, 0, 0, None)
        self.args = (
            f"{preempt.signal_name(signum)}: stopping, and the training worker of slot {slot} ended before it "
            "saved mid-epoch (under proctrack/cgroup a Slurm job's cancel or requeue ends the worker with the "
            "job's batch step); the retry resumes from the latest last.pt",
        )


# ------------------------------------------------------------------------------------------ where
def code_fingerprint() -> str:
    """What a worker's imported code depends on: every source file of the package (name, size, mtime)
    and the interpreter. A change gives a new worker directory, so old workers are never used."""
    h = hashlib.sha256(f"{PROTOCOL} {sys.executable} {sys.version}".encode())
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(PACKAGE_DIR)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _torch_dir() -> Path | None:
    spec = importlib.util.find_spec("torch")  # locates the package without importing it (~0.1 ms)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def torch_stamp() -> str:
    """The installed torch as files (size, mtime of ``__init__.py`` and ``version.py``): torch upgraded in
    place gives new workers, not one still running the old version."""
    d = _torch_dir()
    if d is None:
        return "no torch"
    stamps = []
    for name in ("__init__.py", "version.py"):
        with contextlib.suppress(OSError):
            st = (d / name).stat()
            stamps.append(f"{name} {st.st_size} {st.st_mtime_ns}")
    return f"{d} " + " ".join(stamps)


def worker_environment() -> str:
    """The environment variables that change what torch, CUDA or the thread pools do (``ENV_PREFIXES``): a
    worker keeps the environment of the job that started it, so jobs with other values get other workers."""
    return "\n".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES))


def worker_dir() -> Path:
    """The directory of this job's workers (module doc). ``SEGSWEEP_WORKER_DIR`` sets its parent (default
    ``$TMPDIR/segsweep-workers-<uid>``: node-local, short enough for a Unix socket path)."""
    key = "\n".join(
        [
            code_fingerprint(),
            torch_stamp(),
            worker_environment(),  # CUDA_VISIBLE_DEVICES (the job's GPUs) among them
            os.path.realpath(os.getcwd()),
            os.environ.get("SLURM_JOB_ID", ""),
        ]
    )
    path = spawners.worker_base() / hashlib.sha256(key.encode()).hexdigest()[:16]
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def visible_gpus() -> list[str]:
    """The GPU ids this job may use: ``CUDA_VISIBLE_DEVICES`` (Slurm sets it), else the ``/dev/nvidia<k>``
    device files (read without importing torch or starting CUDA); [] without GPUs."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in (x.strip() for x in env.split(",")) if g and g != "-1"]
    return sorted((m.group(1) for f in os.listdir("/dev") if (m := re.fullmatch(r"nvidia(\d+)", f))), key=int)


def gpu_of_slot(slot: int, gpus: list[str]) -> str | None:
    """Round-robin: slot i trains on GPU ``gpus[i mod n]`` (None without GPUs)."""
    return gpus[slot % len(gpus)] if gpus else None


@contextlib.contextmanager
def take_slot(directory: Path, poll_s: float = 0.5) -> Iterator[int]:
    """Hold the lowest free slot (an exclusive ``flock``, released by the OS if this process dies)."""
    while True:
        for i in range(MAX_SLOTS):
            fh = open(directory / f"slot-{i}.lock", "a+")  # noqa: SIM115 - held for the block
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            try:
                yield i
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
            return
        time.sleep(poll_s)  # more training jobs than slots: only with a hand-made MAX_SLOTS overflow


@contextlib.contextmanager
def cell_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``<cell>/.train.lock``: a retried cell waits until the worker still stopping it has let go."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".train.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------ client
def train_in_worker(
    call: str,
    params: Any,
    args: Mapping[str, Any],
    *,
    idle_s: float,
    job_log: logging.Logger | None = None,
    stop_by: float | None = None,
) -> Any:
    """Run ``loop.<call>(params, **args)`` (``train_cell``) in this job's worker and return its result
    (module doc). ``params`` is a `CellParams`; ``args`` must be JSON-serialisable (paths as strings);
    ``idle_s``: how long a worker started now waits for its next cell (``resources.worker_idle_s``); ``stop_by``:
    when the cell must stop (epoch seconds, `segsweep.training.preempt.stop_by`: a Slurm job's time limit)."""
    job_log = job_log or log
    directory = worker_dir()
    request = {
        "protocol": PROTOCOL,
        "call": call,
        "params": params.to_dict(identity=True),
        "args": dict(args),
        "stop_by": stop_by,
        "cwd": os.getcwd(),
    }
    forwarded: list[int] = []  # the stop signals passed on to the worker
    with take_slot(directory) as slot:
        conn = _connect(directory, slot, idle_s, job_log)
        with conn, _forward_stop_signals(conn, forwarded):
            spawners.send_line(conn, request)
            reply = None
            try:
                for msg in spawners.read_lines(conn):
                    if "log" in msg:
                        rec = msg["log"]
                        logging.getLogger(rec["name"]).log(rec["level"], "%s", rec["msg"])
                    else:
                        reply = msg
                        break
            except (ConnectionError, OSError) as exc:
                _raise_if_stopping(forwarded, slot)
                raise WorkerCrash(f"lost the training worker of slot {slot} ({exc})") from None
    if reply is None:
        _raise_if_stopping(forwarded, slot)
        raise WorkerCrash(
            f"the training worker of slot {slot} ended while training this cell (its log: {_worker_log(directory, slot)})"
        )
    job_log.info(
        "trained in worker pid %s (slot %d, cell %d of this worker): %.1f CPU s in the worker",
        reply.get("pid"),
        slot,
        reply.get("cells", 0),
        reply.get("cpu_s", float("nan")),
    )
    if reply.get("error") == "user":
        raise SegsweepError(reply["message"])
    if reply.get("error") == "preempted":
        raise Preempted(*reply["preempted"])
    if reply.get("error"):
        reason = f"{reply['type']}: {reply['message']}"
        raise WorkerCrash(f"{reason}\n--- in the training worker ---\n{reply['traceback']}", reason=reason)
    return _decode_result(reply["result"])


def _raise_if_stopping(forwarded: list[int], slot: int) -> None:
    """The worker has gone: a stop (`WorkerLostOnStop`) when a stop signal was passed on to it or this job's
    Slurm job is ending (cancelled, requeued: Slurm marks it before it signals), else a crash (the caller's)."""
    state = None if forwarded else slurm_job.state()
    if forwarded or state not in (None, "RUNNING"):
        raise WorkerLostOnStop(forwarded[0] if forwarded else signal.SIGTERM, slot)


def _worker_log(directory: Path, slot: int) -> Path:
    return directory / f"slot-{slot}.log"


def _connect(directory: Path, slot: int, idle_s: float, job_log: logging.Logger) -> socket.socket:
    path = directory / f"slot-{slot}.sock"
    if len(os.fsencode(path)) > 100:  # sun_path holds 108 bytes
        raise SegsweepError(
            f"trainer worker socket path too long ({path}): set SEGSWEEP_WORKER_DIR to a short directory"
        )
    conn = _try_connect(path)
    if conn is not None:
        return conn
    # No worker listens: we hold the slot, so no one else starts one. A stale socket file goes first.
    path.unlink(missing_ok=True)
    env = dict(os.environ)
    gpu = gpu_of_slot(slot, visible_gpus())
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    src = str(PACKAGE_DIR.parent)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-m", "segsweep.training.worker", str(path), str(idle_s)]
    proc = _start_worker(argv, env, _worker_log(directory, slot), slot, job_log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not proc.alive():
            raise WorkerCrash(
                f"the training worker exited at start ({proc.returncode}); its log: {_worker_log(directory, slot)}"
            )
        conn = _try_connect(path)
        if conn is not None:
            return conn
        time.sleep(0.05)
    proc.kill()
    raise WorkerCrash(f"the training worker did not start within {START_TIMEOUT_S:.0f} s")


class _Started:
    """A worker process this client started, or had the job's spawner start (then not this process's child)."""

    def __init__(self, pid: int, popen: subprocess.Popen | None = None):
        self.pid, self.popen = pid, popen

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:  # the spawner reaps its workers (every spawner.POLL_S), so a dead one is soon gone
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    @property
    def returncode(self) -> int | str:
        return "?" if self.popen is None else self.popen.returncode  # the spawner's child: the spawner reaped it

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def _start_worker(argv: list[str], env: dict, log_path: Path, slot: int, job_log: logging.Logger) -> _Started:
    """Start the slot's worker: through the Slurm job's spawner when the batch step started one (so the worker
    outlives this job step under proctrack/cgroup: `segsweep.training.spawner`), else as this process's child."""
    gpu = env.get("CUDA_VISIBLE_DEVICES", "-")
    spawner_sock = os.environ.get(spawners.ENV)
    if spawner_sock:
        reply = spawners.spawn(spawner_sock, argv, env, os.getcwd(), log_path)
        if reply is not None and "declined" in reply:
            job_log.info(
                "the Slurm job's worker spawner declined (%s): this job step starts the worker", reply["declined"]
            )
        elif reply is not None:
            job_log.info(
                "started a training worker (pid %d, slot %d, GPU %s) through the Slurm job's worker spawner "
                "(pid %s, step %s)",
                reply["pid"],
                slot,
                gpu,
                reply["spawner"]["pid"],
                reply["spawner"]["step"],
            )
            return _Started(int(reply["pid"]))
        else:
            job_log.info("the Slurm job's worker spawner does not answer: this job step starts the worker")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # outlives this job (the point); Ctrl-C to snakemake stops only the job
            cwd=os.getcwd(),
        )
    job_log.info("started a training worker (pid %d, slot %d, GPU %s)", proc.pid, slot, gpu)
    return _Started(proc.pid, proc)


def _try_connect(path: Path) -> socket.socket | None:
    if not path.exists():
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        conn.close()
        return None
    return conn


def _forward_stop_signals(conn: socket.socket, forwarded: list[int]):
    """SIGTERM / SIGUSR1 to this job become a stop request to the worker (main thread only); each is appended
    to ``forwarded``."""

    def forward(signum: int, frame) -> None:
        forwarded.append(signum)
        with contextlib.suppress(OSError):
            spawners.send_line(conn, {"op": "stop", "signum": signum})

    return preempt.handling(forward)


def _decode_result(obj: Mapping) -> Any:
    return CellMetrics.from_json(obj["value"]) if obj.get("type") == "CellMetrics" else obj["value"]


def _encode_result(value: Any) -> dict:
    if isinstance(value, CellMetrics):
        return {"type": "CellMetrics", "value": value.to_json()}
    return {"type": "value", "value": value}


# ------------------------------------------------------------------------------------------ server
class _StreamHandler(logging.Handler):
    """Log records of the cell being trained go to its client (the job writes them to its log)."""

    def __init__(self, conn: socket.socket, lock: threading.Lock):
        super().__init__(logging.INFO)
        self.conn, self.send_lock = conn, lock  # not self.lock: logging.Handler holds that one around emit

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(OSError):
            spawners.send_line(
                self.conn,
                {"log": {"name": record.name, "level": record.levelno, "msg": record.getMessage()}},
                self.send_lock,
            )


class Worker:
    """The server side (module doc): one cell at a time, until ``idle_s`` pass without one or a stop signal
    arrives between cells."""

    def __init__(self, sock_path: Path, idle_s: float):
        self.sock_path, self.idle_s = Path(sock_path), float(idle_s)
        self.cells = 0
        self.stopped_by: int | None = None  # a stop signal sent to the worker itself
        self.client_stop = False  # the current cell's stop came from its client (not from a signal)

    def serve(self) -> None:
        from segsweep.training import loop  # the heavy import, once: torch and the training code

        self.loop = loop
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(self.sock_path))
        srv.listen(8)
        srv.settimeout(self.idle_s)
        log.info("worker pid %d (parent %d) listening on %s", os.getpid(), os.getppid(), self.sock_path)
        try:
            while self.stopped_by is None:
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    log.info("idle for %.0f s: exiting", self.idle_s)
                    break
                with conn:
                    self._serve_one(conn)
        finally:
            srv.close()
            with contextlib.suppress(FileNotFoundError):
                self.sock_path.unlink()

    def _serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(None)
        lines = spawners.read_lines(conn)
        try:
            request = next(lines)
        except (StopIteration, OSError, ValueError):
            return
        lock, done = threading.Lock(), threading.Event()
        handler = _StreamHandler(conn, lock)
        root = logging.getLogger()
        root.addHandler(handler)
        t_cpu, t0 = time.process_time(), time.time()
        self.cells += 1
        self.client_stop = False
        preempt.clear_pending_stop()  # a stop meant for the previous cell is not this one's
        reply: dict[str, Any] = {"pid": os.getpid(), "cells": self.cells}
        try:
            if request.get("protocol") != PROTOCOL or request.get("call") != "train_cell":
                raise RuntimeError(f"unknown request {request.get('call')!r} (protocol {request.get('protocol')})")
            # The job's working directory, again for every cell: one deleted and made anew under the same path
            # (the same worker directory) within the worker's idle time would otherwise leave the worker in the
            # deleted one, where every relative path of the cell fails.
            if request.get("cwd"):
                os.chdir(request["cwd"])
            args = dict(request["args"])
            params = CellParams.from_dict(request["params"])
            data_dir, split_path, out_dir = (Path(args.pop(k)) for k in ("data_dir", "split_path", "out_dir"))
            # the client's stop requests, and its disappearance, reach the cell through preempt.request_stop
            threading.Thread(target=self._watch, args=(lines, done), daemon=True).start()
            with cell_lock(out_dir), preempt.stop_by(request.get("stop_by")):
                result = self.loop.train_cell(
                    params, data_dir, split_path, out_dir, log=logging.getLogger("segsweep.jobs"), **args
                )
            reply["result"] = _encode_result(result)
        except SegsweepError as exc:
            reply.update(error="user", message=str(exc))
        except Preempted as exc:
            reply.update(
                error="preempted",
                preempted=[
                    exc.signum,
                    exc.epoch,
                    exc.step,
                    exc.steps,
                    None if exc.checkpoint is None else str(exc.checkpoint),
                ],
            )
            # the worker itself was signalled (e.g. its node's job ends): stop serving; a cell's deadline is its own
            if not self.client_stop and exc.signum != preempt.DEADLINE_SIGNAL:
                self.stopped_by = exc.signum
        except Exception as exc:  # noqa: BLE001 - one cell's crash is reported, the worker goes on
            reply.update(error="crash", type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc())
        finally:
            done.set()
            root.removeHandler(handler)
        reply.update(cpu_s=round(time.process_time() - t_cpu, 3), wall_s=round(time.time() - t0, 3))
        with contextlib.suppress(OSError):
            spawners.send_line(conn, reply, lock)

    def _watch(self, lines: Iterator[dict], done: threading.Event) -> None:
        """Reader thread: a client's stop message, or its socket closing mid-cell, asks the cell to stop."""
        with contextlib.suppress(OSError, ValueError):
            for msg in lines:
                if msg.get("op") == "stop" and not done.is_set():
                    self.client_stop = True
                    preempt.request_stop(int(msg.get("signum") or signal.SIGTERM))
        if not done.is_set():  # the client went away mid-cell (killed): checkpoint and free the slot
            self.client_stop = True
            preempt.request_stop(signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    sock_path, idle_s = sys.argv[1:] if argv is None else argv  # as `_connect` starts it
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Worker(Path(sock_path), float(idle_s)).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

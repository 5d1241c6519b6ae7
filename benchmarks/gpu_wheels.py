"""Wheels for the GPU machine: what benchmarks/gpu.sh needs there and its image lacks, into ``.whl/``.

The lent GPU machine (the ``device`` tool) runs Python 3.12 with torch, numpy, scipy, pandas, matplotlib,
PyYAML, Jinja2, psutil, OpenCV, scikit-image and more (``IMAGE``: the image's package list as last read,
2026-11-17), has no network, and gets only the working tree plus up to 64 MiB of carried paths. The grid
benchmark runs Snakemake, which the image lacks, and segsweep's planning and ingest need jsonschema and
pydicom. This script takes the dependency closure of those (``NEEDED``) at the versions installed in this
project's venv (the pinned ones the tests run with), drops what the image has (so a carried copy never shadows
the image's numpy or torch), and fetches each as a wheel for CPython ``--python-version`` on manylinux
x86-64: binary wheels from PyPI, and for a project that publishes only an sdist (pure Python) a wheel built
here. Run here, where PyPI is reachable:

    .venv/bin/python benchmarks/gpu_wheels.py            # → .whl/ (ignored by git; gpu.sh installs it there)
    .venv/bin/python benchmarks/gpu_wheels.py --python-version 3.11 --dest /tmp/w311   # for a local check

and call the device with ``carry: [".whl"]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ["snakemake", "jsonschema", "pydicom"]
CARRY_LIMIT_MIB = 64  # the device tool's limit for the working tree and carried paths together
_IMAGE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml
regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate
tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
IMAGE = set(_IMAGE_PACKAGES.split())
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
PLATFORMS += ["manylinux1_x86_64"]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str]) -> dict[str, str]:
    """name → installed version of ``roots`` and everything they require (no extras), from this venv."""
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = norm(todo.pop())
        if name in found:
            continue
        dist = md.distribution(name)  # PackageNotFoundError: the venv lacks a dependency; reinstall it
        found[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def fetch(name: str, version: str, dest: Path, python_version: str) -> Path:
    """One wheel of ``name==version`` for the target Python in ``dest``: PyPI's, else built here (pure only)."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    target = ["--python-version", python_version, "--implementation", "cp"]
    target += [arg for p in PLATFORMS for arg in ("--platform", p)]
    before = set(dest.glob("*.whl"))
    got = subprocess.run(
        [*pip, "download", "--no-deps", "--only-binary=:all:", *target, "-d", str(dest), f"{name}=={version}"],
        capture_output=True,
        text=True,
    )
    if got.returncode != 0:  # an sdist-only project: build its wheel, which must be pure Python to travel
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([*pip, "wheel", "--no-deps", "-w", tmp, f"{name}=={version}"], check=True)
            (wheel,) = Path(tmp).glob("*.whl")
            if not wheel.name.endswith("-none-any.whl"):
                raise SystemExit(f"{name}=={version}: no wheel for Python {python_version} and not pure: {wheel.name}")
            shutil.move(str(wheel), dest / wheel.name)
    (new,) = set(dest.glob("*.whl")) - before
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", type=Path, default=ROOT / ".whl")
    ap.add_argument("--python-version", default="3.12", help="the GPU image's Python (3.12)")
    args = ap.parse_args(argv)
    versions = {n: v for n, v in closure(NEEDED).items() if n not in IMAGE}
    shutil.rmtree(args.dest, ignore_errors=True)
    args.dest.mkdir(parents=True)
    for name, version in sorted(versions.items()):
        wheel = fetch(name, version, args.dest, args.python_version)
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    total = sum(p.stat().st_size for p in args.dest.glob("*.whl")) / 2**20
    print(f"{total:.1f} MiB in {len(versions)} wheels → {args.dest} (carry limit {CARRY_LIMIT_MIB} MiB with the tree)")
    return 0 if total < CARRY_LIMIT_MIB - 8 else 1


if __name__ == "__main__":
    sys.exit(main())

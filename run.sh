#!/usr/bin/env bash
# One entry point for a fresh machine (Python 3.11 + pip): installs the project venv (pinned versions) and runs
#   ./run.sh demo    the whole pipeline on the built-in phantom → reports/report.html + reports/report.pdf
#   ./run.sh test    the test suite (what .ci/run calls)
#   ./run.sh lint    ruff (lint + format), snakefmt and snakemake --lint, as CI runs them before the tests
#   ./run.sh setup   only the install
# Extra arguments go to snakemake (demo) or pytest (test), e.g. ./run.sh demo --cores 2 -n
set -euo pipefail
cd "$(dirname "$0")"
VENV=${SEGSWEEP_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
    local stamp="$VENV/.segsweep-installed"
    local want
    want=$(sha256sum pyproject.toml | cut -c1-16)
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    echo "segsweep: installing the project environment in $VENV (a few minutes the first time)" >&2
    [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    # torch first, in its own call: so no other package's dependency pulls a different torch build.
    "$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
    "$VENV/bin/pip" install -q -e ".[test,slurm,lint]"
    echo "$want" >"$stamp"
}

cmd=${1:-demo}
shift || true
case "$cmd" in
    setup) setup ;;
    demo)
        setup
        cores=${SEGSWEEP_CORES:-$(nproc)}
        "$VENV/bin/snakemake" --cores "$cores" --rerun-incomplete "$@"
        [[ " $* " == *" -n "* ]] || echo "segsweep: report at reports/report.html and reports/report.pdf"
        ;;
    test)
        setup
        # Two workers, one test file each at a time (--dist loadfile: a file's module fixtures run once). The
        # end-to-end tests wait on Snakemake's single-threaded planning much of the time, so two at once use
        # the cores better. SEGSWEEP_TEST_WORKERS=0 runs serially.
        "$VENV/bin/python" -m pytest -n "${SEGSWEEP_TEST_WORKERS:-2}" --dist loadfile "$@"
        ;;
    lint)
        setup
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/snakefmt" --check .
        "$VENV/bin/snakemake" --lint --cores 1 >/dev/null
        echo "segsweep: ruff, ruff format, snakefmt and snakemake --lint are clean"
        ;;
    *)
        echo "usage: $0 {demo|test|lint|setup} [args...]" >&2
        exit 2
        ;;
esac

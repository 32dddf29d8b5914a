#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment from the lock: torch, then every pinned package of
# requirements-lock.txt with --no-deps (nothing unpinned can slip in), then fastervlm itself, editable.
#   bash scripts/setup_env.sh                 # .venv, CPU torch 2.13.0
#   VENV=/tmp/v TORCH_SPEC='torch==2.13.0' bash scripts/setup_env.sh
# Reuse: the environment records a digest of the lock and pyproject.toml and is rebuilt when either changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# The base interpreter, not the environment being built (make puts $VENV/bin first on PATH).
if [[ -n ${VIRTUAL_ENV:-} ]]; then
    PATH=${PATH//"$VIRTUAL_ENV/bin:"/}
fi
PYTHON=${PYTHON:-python3}
# The CPU wheel (this is what CI runs). On a GPU machine set TORCH_SPEC to the CUDA build you want; a bare
# `torch` on a plain index resolves a CUDA build of several GB.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
LOCK=requirements-lock.txt

digest=$( (cat "$LOCK" pyproject.toml; echo "$TORCH_SPEC") | sha256sum | cut -d' ' -f1)
stamp="$VENV/.fastervlm-env"
if [[ -f $stamp && $(cat "$stamp") == "$digest" ]]; then
    exit 0
fi

locked_python=$(sed -n 's/.* with Python \([0-9]*\.[0-9]*\).*/\1/p' "$LOCK" | head -n 1)
have_python=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
if [[ -n $locked_python && $have_python != "$locked_python" ]]; then
    echo "note: the lock was made with Python $locked_python and $PYTHON is $have_python; set PYTHON=python$locked_python" \
        "to match it, or regenerate the lock with: PYTHON=$PYTHON bash scripts/lock.sh" >&2
fi

echo "setting up $VENV from $LOCK (a few minutes the first time)" >&2
"$PYTHON" -m venv --clear "$VENV"
py="$VENV/bin/python"
pip=("$py" -m pip install -qq --disable-pip-version-check)
"${pip[@]}" $(grep -E '^(pip|setuptools)==' "$LOCK")
"${pip[@]}" "$TORCH_SPEC"
torch_before=$("$py" -c 'import torch; print(torch.__version__)')
# --no-build-isolation: an sdist in the lock builds with the locked setuptools, not whatever is newest.
"${pip[@]}" --no-deps --no-build-isolation -r "$LOCK"
"${pip[@]}" --no-deps --no-build-isolation -e .
torch_after=$("$py" -c 'import torch; print(torch.__version__)')
if [[ $torch_before != "$torch_after" ]]; then
    echo "error: installing the lock replaced torch $torch_before with $torch_after" >&2
    exit 1
fi
"$py" -c 'import fastervlm, lmms_eval.evaluator, wandb, accelerate, pytest' || {
    echo "error: $VENV was built from $LOCK but the eval stack does not import (see above)" >&2
    exit 1
}
echo "$digest" > "$stamp"
echo "ready: $VENV (torch $torch_after, $(grep -c '==' "$LOCK") locked packages, fastervlm editable)" >&2

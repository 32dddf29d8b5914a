#!/usr/bin/env bash
# Install the evaluation stack into the current environment (one you brought, with torch already in it) at the
# versions the project tested: requirements-eval-cpu.txt's packages, constrained to requirements-lock.txt.
# lmms-eval pins torchvision, and resolving that on a CPU machine pulls a CUDA torch: lmms-eval goes in with
# --no-deps. Fails if torch changed. (`make test` / `make eval` build their own .venv from the lock instead.)
set -euo pipefail
cd "$(dirname "$0")/.."
before="$(python -c 'import torch; print(torch.__version__)')"
grep -v '^lmms-eval' requirements-eval-cpu.txt | python -m pip install --quiet -c requirements-lock.txt -r /dev/stdin
python -m pip install --quiet --no-deps "$(grep '^lmms-eval' requirements-lock.txt)"
after="$(python -c 'import torch; print(torch.__version__)')"
if [ "$before" != "$after" ]; then
    echo "error: installing the eval stack replaced torch $before with $after" >&2
    exit 1
fi
python -c 'import lmms_eval.evaluator, wandb, accelerate; print("eval stack ok; torch", __import__("torch").__version__)'

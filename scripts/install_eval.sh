#!/usr/bin/env bash
# Install the evaluation stack next to a CPU (or any preinstalled) torch without letting pip replace it:
# lmms-eval pins torchvision, and resolving that pulls a CUDA torch. lmms-eval goes in with --no-deps; the
# packages it needs at runtime come from requirements-eval-cpu.txt. Fails if torch changed.
set -euo pipefail
cd "$(dirname "$0")/.."
before="$(python -c 'import torch; print(torch.__version__)')"
grep -v '^lmms-eval' requirements-eval-cpu.txt | python -m pip install --quiet -r /dev/stdin
python -m pip install --quiet --no-deps "$(grep '^lmms-eval' requirements-eval-cpu.txt)"
after="$(python -c 'import torch; print(torch.__version__)')"
if [ "$before" != "$after" ]; then
    echo "error: installing the eval stack replaced torch $before with $after" >&2
    exit 1
fi
python -c 'import lmms_eval.evaluator, wandb, accelerate; print("eval stack ok; torch", __import__("torch").__version__)'

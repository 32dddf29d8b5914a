#!/usr/bin/env bash
# One-command GPU benchmark: LLaVA-1.5-7B and LLaVA-NeXT-7B (paper layout) at full size with random weights
# (speed does not depend on weight values; nothing is downloaded but packages), bf16, sdpa and flash attention
# when it installs, unpruned / FasterVLM / FastV / SparseVLM at 75 / 90 / 95 %: time to first token, decode
# tokens/s, peak memory -> benchmarks/results/gpu_<hardware>.json. Sized to stay under 8 minutes on one H200
# (an estimate; not yet run on one).
#
#   bash benchmarks/gpu.sh                                  # on a GPU machine, bare or not
#   GPU_BENCH_DEVICE=cpu GPU_BENCH_SCALE=0.02 bash benchmarks/gpu.sh   # the same path on a CPU, in a minute
#
# Environment: PYTHON (an interpreter that already has fastervlm's needs is used as is), VENV (else built here,
# default .venv-gpu), TORCH_SPEC (default: torch, PyPI's CUDA build on Linux), FLASH_ATTN=0 to skip trying
# flash-attn (tried with a time limit, FLASH_TIMEOUT seconds), GPU_BENCH_ARGS (more driver flags, e.g.
# "--archs llava-1.5-7b --repeats 5"; see python -m fastervlm.bench.gpu --help).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${GPU_BENCH_DEVICE:-cuda}
SCALE=${GPU_BENCH_SCALE:-1}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-gpu}

if "$PYTHON" -c 'import fastervlm.bench.gpu, fastervlm.bench.latency' 2>/dev/null; then
    echo "== using $PYTHON ($("$PYTHON" -c 'import torch; print("torch", torch.__version__)'))"
else
    echo "== installing into $VENV: ${TORCH_SPEC:-torch}, then fastervlm with its dependencies"
    if [[ ! -x $VENV/bin/python ]]; then
        "$PYTHON" -m venv "$VENV"
    fi
    PYTHON=$VENV/bin/python
    "$PYTHON" -m pip install -q --disable-pip-version-check --upgrade pip
    "$PYTHON" -m pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch}"
    "$PYTHON" -m pip install -q --disable-pip-version-check -e .
fi

if [[ $DEVICE == cuda ]]; then
    "$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "torch sees no CUDA device"; print("== device:", torch.cuda.get_device_name())'
    if [[ ${FLASH_ATTN:-1} == 1 ]] && ! "$PYTHON" -c 'import flash_attn' 2>/dev/null; then
        echo "== trying flash-attn (a prebuilt wheel or nothing: at most ${FLASH_TIMEOUT:-240} s)"
        if ! timeout "${FLASH_TIMEOUT:-240}" "$PYTHON" -m pip install -q --disable-pip-version-check \
            --no-build-isolation flash-attn; then
            echo "== flash-attn did not install: sdpa only"
        fi
    fi
fi

echo "== benchmark: device $DEVICE, scale $SCALE"
# shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of flags
"$PYTHON" -m fastervlm.bench.gpu --device "$DEVICE" --scale "$SCALE" ${GPU_BENCH_ARGS:-}

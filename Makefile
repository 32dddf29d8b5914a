# The two commands a newcomer needs, each building (or reusing) .venv from requirements-lock.txt first:
#   make demo     the main job on the embedded default (tiny random LLaVA-1.5, no download)
#   make test     the test suite (pass pytest arguments with ARGS="-k fastv")
# and: make eval (the embedded default eval grid: table + plots), make lint, make lock (refresh the lock).
VENV ?= .venv
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(VIRTUAL_ENV)/bin:$(PATH)

.PHONY: env demo test eval lint lock

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

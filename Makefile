# InfiniteFlow — newcomers need two commands: `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
GPU_CHECK_ARGS ?=

.PHONY: help setup lock up down status demo test test-unit test-integration test-faults test-broker-restart lint bench bench-pipeline bench-fairness bench-planning gpu-check soak clean-run images test-images

help:
	@echo "make demo   start everything and run the main job"
	@echo "make test   lint, type-check and run the whole suite against the real servers"
	@echo "more: setup lock up down status lint test-unit test-integration bench bench-pipeline bench-fairness bench-planning gpu-check clean-run"
	@echo "      images       build the container images with podman (Debian base + the service image infra/k8s runs)"
	@echo "      test-images  run the five services from the image against the stack (make up), one job end to end"

setup:  ## install Debian packages, Kafka jars, the MinIO server and the .venv exactly as uv.lock says (idempotent)
	@scripts/setup.sh

lock:  ## refresh uv.lock on purpose after changing pyproject.toml (UPGRADE=1: newest allowed versions of every package)
	@source infra/versions.env && scripts/setup.sh --uv-only && "$$INFINITEFLOW_CACHE/uv-$$UV_VERSION/bin/uv" lock $(if $(UPGRADE),--upgrade)

up: setup  ## start Kafka, MinIO, PostgreSQL, Prometheus on 127.0.0.1 and bootstrap them (idempotent)
	@infra/stack.sh up

down:  ## stop the services and the stack (data stays in .run/)
	@if [ -x $(BIN)/infiniteflow ]; then $(BIN)/infiniteflow services down; fi
	@infra/stack.sh down

status:
	@infra/stack.sh status

clean-run: down  ## stop the stack and delete its data
	rm -rf .run

demo: up  ## the main job (the pipeline issue completes it): bring the stack up and show where it is
	@scripts/demo.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test-unit: setup
	$(BIN)/pytest tests/unit tests/contract -q $(PYTEST_ARGS)

test-integration: up
	$(BIN)/pytest tests/integration tests/e2e -q $(PYTEST_ARGS)

test-faults: up  ## kill, stop and poison parts of a running pipeline (its own pytest session)
	$(BIN)/pytest tests/faults -q $(PYTEST_ARGS)

test-broker-restart: up  ## only the Kafka-restarted-mid-job case (also part of test-faults)
	$(BIN)/pytest tests/faults -q -m broker_restart $(PYTEST_ARGS)

test: up lint  ## everything, against the real servers
	$(BIN)/pytest -q --ignore=tests/faults $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-faults

bench: setup  ## engine quality/speed benchmark → docs/benchmarks.md (not part of make test)
	$(BIN)/python -m services.gpu_interp.bench

gpu-check: setup  ## on a CUDA machine: GPU tests, fp16 vs fp32, pairs/s, one 1080p job → reports/gpu-check-*/ (< 8 min)
	$(BIN)/python -m services.gpu_interp.gpu_check $(GPU_CHECK_ARGS)

soak: up  ## issue 13's soak: 20 mixed jobs under a chaos loop of SIGKILLs → docs/operating.md (~25 min; hold the stack lock)
	$(BIN)/python scripts/soak.py $(SOAK_ARGS)

bench-pipeline: up  ## data path before/after → docs/capacity.md (hold the stack lock; see scripts/bench_pipeline.py)
	$(BIN)/python scripts/bench_pipeline.py $(BENCH_ARGS)

bench-fairness: up  ## many jobs at once: first come first served, fair dispatch, fair dispatch with preemption → docs/capacity.md (~30 min; hold the stack lock)
	$(BIN)/python scripts/bench_fairness.py $(BENCH_ARGS)

bench-planning: up  ## planning that streams: first chunk of a 30-min 1080p upload, small upload behind a long one → docs/capacity.md (~25 min; hold the stack lock)
	$(BIN)/python scripts/bench_planning.py $(BENCH_ARGS)

images:  ## the container images with podman: Debian base (debootstrap, cached), then localhost/infiniteflow:<version> (not part of make test)
	@scripts/images.sh build

test-images:  ## the services from the image (host network) against `make up`'s stack, one job end to end; takes the stack lock itself (~2–3 min once it has it)
	@scripts/images.sh test

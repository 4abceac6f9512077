# Daihuo: every target creates the virtualenv and installs the pinned requirements if needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help venv venv-beam bench-beam lock lint fmt check-emulators test demo up down status bench bench-coldstart bench-ingest bench-live bench-live-e2e bench-clean bench-recommend bench-recommend-serve bench-ranker bench-train eval-served evaluate schema clean-var package checkov infra-fmt

help:
	@echo "make demo            the main job: local cloud + a simulated live-stream evening through every function"
	@echo "make test            the whole default test suite, two xdist workers (PYTEST_ARGS=\"-n 0\": serially)"
	@echo "make venv-beam       the Beam clean job's own environment .venv-beam (requirements/beam.txt; pipelines/beam)"
	@echo "make bench-beam      the Beam engine vs the DuckDB engine at 1M events (BEAM_EVENTS=...)"
	@echo "make lock            recompile requirements/*.in to the pinned lock files and requirements.txt (LOCK_ARGS=\"-P pkg\" to upgrade one)"
	@echo "make lint / fmt      ruff lint + format check and mypy on the pure modules / apply ruff fixes and format"
	@echo "make up / down       start / stop the local cloud in the background (status: make status)"
	@echo "make bench           every benchmark (bounded sizes), each figure beside its anchor, a summary table"
	@echo "make bench-coldstart cold starts of the packaged bundles (read-only, unprivileged) vs a bare function"
	@echo "make bench-ingest    ingest throughput and latency (figures in README)"
	@echo "make bench-live      live layer: one instance's events/s (batched, single), accepted->visible latency (docs/live.md)"
	@echo "make bench-live-e2e  accepted by ingest -> visible in the live read, p50/p95 at a steady rate (docs/live.md)"
	@echo "make bench-clean     cleaning + analytics over 10M simulated events vs DuckDB"
	@echo "make bench-recommend recommendation fit and scoring speed"
	@echo "make bench-recommend-serve  recommend for the heaviest verified viewers at 50k items, in process + HTTP"
	@echo "make evaluate        offline evaluation on MovieLens 100k (DATA=../shared/data/ml-100k)"
	@echo "make eval-served     the served recipe vs every baseline (repeat world, one evening, Ta Feng)"
	@echo "make bench-ranker    the served recipe's fit time and request latency (10M events, 50k items)"
	@echo "make bench-train     the whole train function per phase, wall + CPU + load (default 10M events)"
	@echo "make package         build dist/<function>.zip deployable bundles + the Dataflow Flex Template contexts dist/dataflow/ (docs/deploy.md)"
	@echo "make checkov         static security checks of infra/ (own tool venv)"

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

# requirements/<role>.in (direct requirements) -> requirements.txt (everything, what `make venv` installs; existing
# pins are kept unless LOCK_ARGS says otherwise, e.g. LOCK_ARGS="-P numpy" or "--upgrade") -> requirements/<role>.txt
# (each role's subset, constrained to the same versions) -> functions/<name>/requirements.txt pins (same versions).
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile -q --strip-extras --annotation-style=line \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host
LOCK_ARGS ?=
lock: venv
	$(PIP_COMPILE) $(LOCK_ARGS) -o requirements.txt requirements/bench.in requirements/dev.in
	@for role in runtime test bench dev; do \
	  rm -f requirements/$$role.txt; \
	  $(PIP_COMPILE) -c requirements.txt -o requirements/$$role.txt requirements/$$role.in || exit 1; \
	done
	$(PY) -m devtools.lock
	@mkdir -p var/lock && grep -vE '^(protobuf|pyarrow)==' requirements.txt > var/lock/beam-constraints.txt
	rm -f requirements/beam.txt
	$(PIP_COMPILE) -c var/lock/beam-constraints.txt -o requirements/beam.txt requirements/beam.in

# the Beam clean job's own environment (requirements/beam.in: apache-beam needs protobuf < 7, pyarrow < 26)
VENV_BEAM  ?= .venv-beam
BEAM_STAMP := $(VENV_BEAM)/.installed-$(shell sha1sum requirements/beam.txt | cut -c1-12)
venv-beam: $(BEAM_STAMP)

$(BEAM_STAMP): requirements/beam.txt
	@test -x $(VENV_BEAM)/bin/python || $(PYTHON) -m venv $(VENV_BEAM)
	$(VENV_BEAM)/bin/python -m pip install -q --upgrade pip
	$(VENV_BEAM)/bin/python -m pip install -q --no-deps -r requirements/beam.txt
	@rm -f $(VENV_BEAM)/.installed-*
	@touch $@

check-emulators: venv
	@$(PY) -m devtools.emulators check

test: venv venv-beam check-emulators   # venv-beam: the Beam engine tests run too (~20 s to create, from the lock)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: venv check-emulators
	$(PY) -m devtools.demo $(DEMO_ARGS)

up: venv check-emulators
	$(PY) -m devtools.localcloud up --detach $(UP_ARGS)

down: venv
	$(PY) -m devtools.localcloud down

status: venv
	$(PY) -m devtools.localcloud status

bench: venv check-emulators   # every benchmark at bounded sizes + a summary table (bench/run_all.py; BENCH_ONLY=clean,coldstart)
	$(PY) bench/run_all.py $(if $(BENCH_ONLY),--only $(BENCH_ONLY))

bench-coldstart: venv check-emulators
	$(PY) bench/bench_coldstart.py $(BENCH_ARGS)

bench-ingest: venv check-emulators
	$(PY) bench/bench_ingest.py $(BENCH_ARGS)

bench-live: venv check-emulators
	$(PY) bench/bench_live.py $(BENCH_ARGS)

bench-live-e2e: venv check-emulators
	$(PY) bench/bench_live_e2e.py $(BENCH_ARGS)

CLEAN_EVENTS ?= 10000000
CLEAN_SCALING ?= 1000000,2000000,5000000
bench-clean: venv   # the issue's size and the smaller ones (linear scaling); CLEAN_EVENTS=2000000 for a quicker run
	$(PY) bench/bench_clean.py --events $(CLEAN_EVENTS) --scaling $(CLEAN_SCALING) $(BENCH_ARGS)

BEAM_EVENTS ?= 1000000
bench-beam: venv venv-beam   # the Beam engine and the DuckDB engine over the same 1M events, outputs compared
	$(PY) bench/bench_beam.py --events $(BEAM_EVENTS) $(BENCH_ARGS)

bench-recommend: venv
	$(PY) bench/bench_recommend.py $(BENCH_ARGS)

bench-recommend-serve: venv check-emulators   # heaviest verified viewers, 50k items: in process + HTTP (wrk) vs hello
	$(PY) bench/bench_recommend_serve.py $(BENCH_ARGS)

bench-ranker: venv
	$(PY) bench/bench_ranker.py $(BENCH_ARGS)   # the served recipe: whole fit + request latency, v1 anchor

bench-train: venv
	$(PY) bench/bench_train.py $(BENCH_ARGS)    # whole run_train per phase (read/prepare/evaluate/fit/encode/write), wall + CPU + load

eval-served: venv
	$(PY) bench/eval_served.py $(EVAL_ARGS)     # served recipe vs every baseline: repeat world, one evening, Ta Feng

DATA ?= ../shared/data/ml-100k
evaluate: venv
	$(PY) -m devtools.evaluate --data $(DATA) $(EVAL_ARGS)

schema: venv
	$(PY) -m shared.contract > schema/events.v1.json

clean-var:
	rm -rf var/

package: venv
	$(PY) -m devtools.package --out dist $(PACKAGE_ARGS)
	$(PY) -m devtools.flex_template --out dist/dataflow $(FLEX_ARGS)

checkov:
	bash .ci/checkov.sh

infra-fmt:
	terraform fmt -check -recursive infra

# ruff (lint + format check) on everything; mypy on the modules listed in MYPY_MODULES (pure logic)
MYPY_MODULES ?= shared/limits.py shared/signing.py shared/log.py shared/pipeline/config.py shared/http.py shared/runtime.py shared/settings.py shared/layout.py shared/alert_rules.py \
	shared/reco shared/serving/gate.py shared/serving/train.py shared/serving/registry.py shared/serving/experiments.py
lint: venv
	$(BIN)/ruff check shared functions devtools tests bench pipelines
	$(BIN)/ruff format --check shared functions devtools tests bench pipelines
	$(BIN)/mypy $(MYPY_MODULES)

fmt: venv
	$(BIN)/ruff check --fix shared functions devtools tests bench pipelines
	$(BIN)/ruff format shared functions devtools tests bench pipelines

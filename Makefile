# Targets a newcomer guesses. `make test` and `make demo` work on a fresh Debian/Ubuntu
# machine: they install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export LLMQUOTA_CACHE ?= $(HOME)/.cache/llmquota
export PATH := $(CURDIR)/$(BIN):$(LLMQUOTA_CACHE)/bin:$(PATH)

.PHONY: install system-deps demo test unit integration e2e lint typecheck crds testbed bench clean

install: system-deps $(BIN)/llmquota

system-deps:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server from Debian's packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server; }

$(BIN)/llmquota: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

demo: install
	$(BIN)/llmquota demo

test: install testbed lint typecheck
	$(BIN)/pytest tests

unit: install
	$(BIN)/pytest tests/unit

integration: install testbed
	$(BIN)/pytest tests/integration

e2e: install testbed
	$(BIN)/pytest tests/e2e

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# mypy strict over every module of the three source roots (one namespace package, so
# each root's package is named), then the tests and benchmarks. The count check fails
# when mypy silently skipped a module (as `-p llmquota` alone once skipped two roots).
MYPY_PACKAGES := -p llmquota -p llmquota.operator -p llmquota.sidecar
typecheck: install
	@$(BIN)/mypy -v $(MYPY_PACKAGES) 2>$(VENV)/mypy-sources.log; rc=$$?; \
	  seen=$$(grep -o "BuildSource(path='[^']*[.]py'" $(VENV)/mypy-sources.log | sort -u | wc -l); \
	  want=$$(find core operator sidecar -name '*.py' | wc -l); \
	  echo "mypy saw $$seen of $$want modules in core/, operator/, sidecar/"; \
	  [ "$$rc" = 0 ] && [ "$$seen" = "$$want" ]
	$(BIN)/mypy tests bench

crds: install
	$(BIN)/llmquota crds --write crds
	cp crds/*.yaml charts/llmquota/crd-files/

testbed: install
	PYTHON=$(CURDIR)/$(BIN)/python bash testbed/build.sh

# bench/floors.py drives its load with Debian's wrk.
bench: install
	@command -v wrk >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk; }
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

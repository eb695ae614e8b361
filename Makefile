# Targets a newcomer guesses. `make test` and `make demo` work on a fresh Debian/Ubuntu
# machine: they install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export LLMQUOTA_CACHE ?= $(HOME)/.cache/llmquota
export PATH := $(CURDIR)/$(BIN):$(LLMQUOTA_CACHE)/bin:$(PATH)

.PHONY: install system-deps cluster-deps demo test unit integration e2e e2e-cluster lint typecheck crds testbed bench clean

install: system-deps $(BIN)/llmquota

system-deps:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server from Debian's packages"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server; }

# What the one-node cluster test bed runs on (make e2e-cluster, docs/testbed.md).
CLUSTER_DEBS := containerd runc containernetworking-plugins iptables socat dnsmasq-base \
                mmdebstrap gcc libc6-dev
cluster-deps:
	@missing=$$(for p in $(CLUSTER_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian's packages:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BIN)/llmquota: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

demo: install
	$(BIN)/llmquota demo

test: install testbed lint typecheck
	$(BIN)/pytest tests --ignore=tests/cluster
	$(MAKE) e2e-cluster

unit: install
	$(BIN)/pytest tests/unit

integration: install testbed
	$(BIN)/pytest tests/integration

e2e: install testbed
	$(BIN)/pytest tests/e2e

# Real Pods on a one-node cluster (needs root): node binaries and images are built once
# into $(LLMQUOTA_CACHE); whatever a killed run left behind is swept before and after.
e2e-cluster: install testbed cluster-deps
	bash testbed/build.sh node
	$(BIN)/python -m tests.support.kube_node cleanup
	trap '$(CURDIR)/$(BIN)/python -m tests.support.kube_node cleanup' EXIT; \
	  $(BIN)/pytest tests/cluster

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

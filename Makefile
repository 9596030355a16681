# vbusfs: `make demo` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := fuse3 libfuse3-dev pkg-config tree iproute2 util-linux graphviz valgrind iputils-ping gcc-multilib
HYPOTHESIS_PROFILE ?= ci
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck pytest bench clean .system-packages

setup: $(STAMP)

# System packages first: pyfuse3 has no wheels and compiles against libfuse3.
.system-packages:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml $(wildcard setup.py) $(wildcard native/*)
	@$(MAKE) --no-print-directory .system-packages
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,bench]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/vbusfs demo

LINT_PATHS = $(wildcard vbusfs tests bench examples)

lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(VPY) -m pytest $(PYTEST_ARGS)

test: setup lint typecheck pytest

bench: setup
	$(VPY) bench/control.py
	@for b in bench/[!_]*.py; do [ "$$b" = bench/control.py ] || $(VPY) $$b; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis

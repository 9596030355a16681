# vbusfs: `make demo` and `make test` work on a fresh Debian machine (bookworm or later, with
# only make and python3 installed). Every Python package comes from the hash-locked files in
# requirements/ (refreshed on purpose with `make lock`); every Debian package from the lists below.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip --disable-pip-version-check
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
HYPOTHESIS_PROFILE ?= ci
PYTEST_ARGS ?=
# pytest-xdist workers: the suite mostly waits (daemons, mounts, processes), so two workers
# halve it even on 2 cores; 0 runs it in this process.
PYTEST_WORKERS ?= 2

# Debian packages. DEMO: building and running vbusfs (pyfuse3 has no wheels and compiles
# against libfuse3; the C ring needs a compiler). TEST: what only the test suite uses.
DEMO_PACKAGES := python3 python3-venv python3-dev gcc libc6-dev pkg-config libfuse3-dev fuse3 tree
TEST_PACKAGES := iproute2 util-linux procps graphviz valgrind iputils-ping gcc-multilib iperf3

INSTALL_INPUTS := pyproject.toml setup.py MANIFEST.in $(wildcard native/*) requirements/build.txt
LOCK := $(VENV)/bin/uv pip compile --universal --python-version 3.11 --generate-hashes --quiet --no-header

.PHONY: setup setup-runtime demo test test-fast lint typecheck pytest bench lock dist check-dist test-lowest image \
        clean .demo-packages .test-packages .venv-ok

setup: .test-packages .venv-ok
	@$(MAKE) --no-print-directory $(DEV_STAMP)

setup-runtime: .demo-packages .venv-ok
	@$(MAKE) --no-print-directory $(RUNTIME_STAMP)

# Installs the Debian packages of a list that are missing (apt-get as root, else sudo).
define apt_install
	@if ! command -v dpkg-query >/dev/null; then \
	  echo "not a Debian system: make sure these (or your system's equivalents) are installed: $(1)"; \
	  exit 0; \
	fi; \
	missing=""; \
	for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

.demo-packages:
	$(call apt_install,$(DEMO_PACKAGES))

.test-packages: .demo-packages
	$(call apt_install,$(TEST_PACKAGES))

# A .venv that a failed or interrupted set-up left half-made (no .created mark), or whose
# interpreter no longer starts or has no pip, is removed and made anew, never reused.
.venv-ok:
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "vbusfs needs Python 3.11 or later; $(PY) is $$($(PY) -V 2>&1). Run: make PY=python3.X ..."; exit 1; }
	@if [ -e $(VENV) ] && { [ ! -f $(VENV)/.created ] || \
	     ! $(VPY) -c 'import pip, sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }; then \
	  echo "$(VENV) is broken or half-made: making it anew"; rm -rf $(VENV); \
	fi
	@if [ ! -e $(VENV) ]; then \
	  $(PY) -m venv $(VENV) || { rm -rf $(VENV); echo "cannot make a venv with $(PY): on Debian, install python3-venv"; exit 1; }; \
	  touch $(VENV)/.created; \
	fi

$(RUNTIME_STAMP): $(INSTALL_INPUTS) requirements/runtime.txt
	$(PIP) install -q --require-hashes --no-deps -r requirements/build.txt
	$(PIP) install -q --require-hashes --no-deps --no-build-isolation -r requirements/runtime.txt
	PYTHONWARNINGS="ignore:Editable installation" $(PIP) install -q --no-deps --no-build-isolation -e .
	@touch $@

$(DEV_STAMP): $(INSTALL_INPUTS) requirements/dev.txt
	$(PIP) install -q --require-hashes --no-deps -r requirements/build.txt
	$(PIP) install -q --require-hashes --no-deps --no-build-isolation -r requirements/dev.txt
	PYTHONWARNINGS="ignore:Editable installation" $(PIP) install -q --no-deps --no-build-isolation -e .
	$(PIP) check
	@touch $@ $(RUNTIME_STAMP)

demo: setup-runtime
	$(VENV)/bin/vbusfs demo

LINT_PATHS = $(wildcard vbusfs tests bench examples tools)

lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(VPY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: setup lint typecheck pytest

# The inner loop: no mounts, no namespaces, no slow tests.
test-fast: setup
	HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) $(VPY) -m pytest -n $(PYTEST_WORKERS) -q -m 'not mount and not root and not slow' $(PYTEST_ARGS)

# The sdist and the abi3 wheel, built from the sdist with the locked build tools.
dist: setup
	rm -rf dist
	$(VPY) -m build --no-isolation --outdir dist .

# dist, then both installed into fresh venvs outside the checkout: demo, vbus_mount, the ring.
check-dist: setup
	$(VPY) tools/check_dist.py

# Refresh every lock file on purpose: the newest releases the floors in pyproject.toml allow.
lock: setup
	$(LOCK) --upgrade pyproject.toml --all-extras requirements/build.in requirements/tools.in -o requirements/dev.txt
	$(LOCK) requirements/build.in -c requirements/dev.txt -o requirements/build.txt
	$(LOCK) pyproject.toml -c requirements/dev.txt -o requirements/runtime.txt

# The floors in pyproject.toml, tested: the lowest releases they allow, in a venv of their own
# and a copy of the checkout's tracked files (so the two builds of the C ring never meet).
LOWEST ?= /tmp/vbusfs-lowest
test-lowest: setup
	rm -rf $(LOWEST) && mkdir -p $(LOWEST)
	git ls-files -z | xargs -0 cp -a --parents -t $(LOWEST)
	$(VENV)/bin/uv pip compile --python-version 3.11 --resolution lowest-direct --quiet --no-header \
	  pyproject.toml --extra test -o $(LOWEST)/lowest.txt
	grep '==' $(LOWEST)/lowest.txt
	cd $(LOWEST) && $(PY) -m venv .venv && .venv/bin/pip install -q --require-hashes --no-deps -r requirements/build.txt
	cd $(LOWEST) && .venv/bin/pip install -q --no-deps --no-build-isolation -r lowest.txt
	cd $(LOWEST) && PYTHONWARNINGS="ignore:Editable installation" .venv/bin/pip install -q --no-deps --no-build-isolation -e .
	cd $(LOWEST) && HYPOTHESIS_PROFILE=$(HYPOTHESIS_PROFILE) .venv/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The container image (examples/container): podman or docker, whichever is installed.
# BASE: the Debian bookworm image to build on (e.g. one made by examples/container/debian-base.sh).
IMAGE ?= vbusfs
BASE ?=
image:
	@engine=$$(command -v podman || command -v docker) || \
	  { echo "make image needs podman or docker (Debian: apt-get install podman runc)"; exit 1; }; \
	set -x; $$engine build -f examples/container/Containerfile -t $(IMAGE) \
	  $(if $(BASE),--build-arg BASE=$(BASE)) .

bench: setup
	$(VPY) bench/control.py
	@for b in bench/[!_]*.py; do [ "$$b" = bench/control.py ] || $(VPY) $$b; done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The two commands of README.md, and the lock they install. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
STAMP := $(VENV)/.prunebench-installed
LOCK := requirements.lock
# uv compiles the lock (`make lock`); it lives in a venv of its own, never in the project's.
LOCK_TOOLS := .lock-tools
UV_VERSION := $(shell sed -n 's/^uv = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: run test venv lock clean

run: $(STAMP)
	$(VENV)/bin/prunebench run $(CONFIG)

# tests/reports screenshots the HTML report with headless Chromium from Debian's packages: installed
# here when missing and possible (root, apt-get), otherwise that one test skips and says why.
test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the HTML report screenshot test will skip"
	$(PY) -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

# Exactly the lock: every package pinned and hash-checked, none resolved here (--no-deps). The locked
# pip and setuptools go first: the newer pip installs the rest in two thirds of the time, and the
# three packages published as source only (rouge-score, sqlitedict, word2number) and the project
# itself build with the locked setuptools (no build isolation: nothing unlocked is fetched for them).
# A venv built from an older lock is rebuilt from scratch, so nothing stale stays in it.
$(STAMP): $(LOCK) pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		{ echo "$(LOCK) is for CPython 3.11 (found $$($(PYTHON) --version)); set PYTHON=python3.11"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PYTHON) flows/environment.py extract pip setuptools > $(VENV)/bootstrap.txt
	$(PY) -m pip install -q --no-deps --require-hashes -r $(VENV)/bootstrap.txt
	$(PY) -m pip install -q --no-deps --require-hashes --no-build-isolation -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) flows/environment.py check
	touch $(STAMP)

# Recompile the lock from pyproject.toml (after changing a dependency there, or to take newer
# releases); commit it, then `make test` installs it afresh and CI proves it on a clean clone.
lock:
	test -x $(LOCK_TOOLS)/bin/uv || { $(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install -q "uv==$(UV_VERSION)"; }
	$(PYTHON) flows/environment.py compile --uv $(LOCK_TOOLS)/bin/uv

clean:
	rm -rf .prunebench results

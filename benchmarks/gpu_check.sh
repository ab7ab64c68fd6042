#!/bin/sh
# The GPU check from this checkout, whatever environment runs it (a GPU machine's own torch and transformers
# included): PYTHON (default python3) with the repository on its path; arguments go to gpu_check.py (--help).
cd "$(dirname "$0")/.." && PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"

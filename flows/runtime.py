"""Process-wide settings that must be in place before Prefect or Hugging Face libraries import."""

from __future__ import annotations

import os
from pathlib import Path


def configure_environment(workdir: Path) -> None:
    """Point Prefect's home, results and cache records into `workdir`; keep every hub offline.

    Values already set in the environment win, so a user can point PREFECT_API_URL at a real
    server or move PREFECT_HOME elsewhere.
    """
    home = Path(workdir).resolve() / "prefect"
    home.mkdir(parents=True, exist_ok=True)  # Prefect's ephemeral API fails to start without it
    defaults = {
        "PREFECT_HOME": str(home),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "results"),
        # The ephemeral API takes 8-18 s to start on two cores (STACK.md); the default is too tight.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # Models and data sets come from local paths only; nothing is fetched from a hub.
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)

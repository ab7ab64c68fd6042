"""A synthetic results database, built through ResultStore.record."""

from __future__ import annotations

import pytest

from reports.store import ResultStore
from tests.reports.synthetic import synthetic_bundles


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> ResultStore:
    store = ResultStore(tmp_path_factory.mktemp("synthetic") / "results.duckdb")
    for bundle in synthetic_bundles():
        store.record(bundle)
    return store

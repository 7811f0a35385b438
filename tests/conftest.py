"""Test order (the shared helpers live in ``helpers.py``): the chapter runs and the other
``slow`` tests start first, so that under ``pytest -n 2`` (``make test``) the two workers
finish together instead of one running a long chapter alone at the end. And one isolation:
no test reads the repository's recorded results (``results/``), which grow as studies are
recorded; a test that wants a record writes its own."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_repository_record(tmp_path_factory, monkeypatch):
    from unichest_lib.evidence import record

    monkeypatch.setattr(record, "ROOT", tmp_path_factory.mktemp("results"))


def _cost(item) -> int:
    if item.get_closest_marker("notebooks") and item.get_closest_marker("slow"):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=_cost)  # stable: the order within each group is kept

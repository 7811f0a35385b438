"""The report filter recovers what the report generator wrote, and reads real Open-I reports.

Floors, not exact numbers: the generated reports come from a small template set (so the filter
should be near perfect on them), the real ones are free text scored against MeSH labels that
are themselves imperfect (see bench/bench_report_filter.py for the measured values)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_report_filter import corpus, evaluate, openi_real  # noqa: E402


@pytest.fixture(scope="module")
def reports():
    return corpus(120, "smoke")


def test_generated_reports_definite_findings(reports):
    r = evaluate(reports, "drop")
    assert r["all"]["recall"] >= 0.95 and r["all"]["precision"] >= 0.85
    assert r["present"]["f1"] >= 0.95


def test_generated_reports_uncertain_counted_as_present(reports):
    r = evaluate(reports, "exists")
    assert r["present"]["recall"] >= 0.95 and r["present"]["precision"] >= 0.9


def test_real_openi_reports_against_mesh_labels():
    s = openi_real()
    assert s["tp"] > 1000
    assert s["recall"] >= 0.85 and s["precision"] >= 0.7

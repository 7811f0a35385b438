"""Recorded predictions (``unichest_lib.evidence.replay``): a study measured live with
recording on reads back from the record alone with the same numbers; a study never mixes
live and recorded runs; the record mode never trains; a stale record gives no verdict."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from helpers import tiny_cfg
from unichest_lib.book import notebook
from unichest_lib.evidence import ledger, measures, record, replay
from unichest_lib.evidence.claims import STALE, measure_claim
from unichest_lib.training import store

SRC = ["chestxray14"]


@pytest.fixture(scope="module")
def _recorded(tmp_path_factory):
    """A tiny smoke configuration whose 'Conquer only' and 'one source' runs (seeds 0, 1)
    were measured live with recording on, into a private results folder (trained once)."""
    tmp = tmp_path_factory.mktemp("replay")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(record, "ROOT", tmp / "results")
        mp.setenv(replay.ENV_RECORD, "1")
        mp.setenv(replay.ENV_COMMAND, "make ledger STUDY=demo")
        mp.setenv(replay.ENV_MODE, "live")
        cfg = tiny_cfg(cache_dir=str(tmp / "cache"))
        live = measures.variant_table(cfg, ["Conquer only", "one source"], SRC)
    return cfg, live, tmp / "results"


@pytest.fixture
def recorded_world(_recorded, tmp_path, monkeypatch):
    """:func:`_recorded` with a copy of its results folder that the test may change."""
    cfg, live, results = _recorded
    shutil.copytree(results, tmp_path / "results")
    monkeypatch.setattr(record, "ROOT", tmp_path / "results")
    for var in (replay.ENV_RECORD, replay.ENV_MODE):
        monkeypatch.delenv(var, raising=False)
    return cfg, live


def _numbers(t: pd.DataFrame) -> pd.DataFrame:
    return t[["variant", "source", "mean", "lo", "hi", "per_seed"]]


def test_a_recorded_study_reads_back_with_the_same_numbers_and_a_caption(recorded_world,
                                                                         monkeypatch):
    cfg, live = recorded_world
    assert live.attrs["evidence"].status == "live"
    parts = sorted((record.ROOT / cfg.profile / "runs").glob("*/*/probs.csv.gz"))
    assert len(parts) == 4  # 2 variants x 2 seeds x 1 source
    monkeypatch.setenv(replay.ENV_MODE, "recorded")
    again = measures.variant_table(cfg, ["Conquer only", "one source"], SRC)
    pd.testing.assert_frame_equal(_numbers(again), _numbers(live), rtol=0, atol=1e-6)
    ev = again.attrs["evidence"]
    assert ev.status == "fresh" and ev.usable
    assert ev.caption.startswith("Recorded ") and "make ledger STUDY=demo" in ev.caption
    assert notebook.evidence_line(again) == ev.caption
    assert notebook.evidence_line(live) == notebook.LIVE_LINE
    prov = record.read(cfg.profile, str(parts[0].parent.relative_to(
        record.ROOT / cfg.profile))).provenance
    assert prov["train_seconds"] > 0 and len(prov["checkpoint_sha256"]) == 64
    assert prov["store_key"] and prov["precision"] in ("float32", "bfloat16")


def test_an_empty_store_serves_the_record_and_trains_nothing(recorded_world, monkeypatch):
    cfg, live = recorded_world
    monkeypatch.setattr(store, "is_valid", lambda *a, **k: False)  # as on a fresh clone

    def no_training(*a, **k):
        raise AssertionError("trained although the record holds every run")
    monkeypatch.setattr(store, "stage_checkpoint", no_training)
    again = measures.variant_table(cfg, ["Conquer only"], SRC)
    assert again.attrs["evidence"].status == "fresh"
    assert np.isclose(again["mean"].iloc[0], live["mean"].iloc[0], atol=1e-6)


def test_a_study_with_some_runs_stored_and_some_recorded_is_not_mixed(recorded_world,
                                                                       monkeypatch):
    cfg, _ = recorded_world
    real = store.is_valid
    monkeypatch.setattr(store, "is_valid", lambda c, stage: c.seed == 0 and real(c, stage))
    kinds = []
    orig = replay.note_used
    monkeypatch.setattr(replay, "note_used", lambda k, rec=None: (kinds.append(k), orig(k, rec)))
    t = measures.variant_table(cfg, ["Conquer only"], SRC)
    assert t.attrs["evidence"].status == "fresh"
    # the first try mixed (seed 0 live, seed 1 recorded); the table comes from the record alone
    assert kinds[:2] == ["live", "recorded"] and set(kinds[2:]) == {"recorded"}


def test_the_record_mode_never_trains_and_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "ROOT", tmp_path / "results")
    monkeypatch.setenv(replay.ENV_MODE, "recorded")
    cfg = tiny_cfg(cache_dir=str(tmp_path / "cache"))
    with pytest.raises(replay.RecordMissing, match="not recorded"):
        measures.variant_table(cfg, ["Conquer only"], SRC)
    assert not (tmp_path / "cache" / "artifacts").exists()
    with pytest.raises(replay.RecordMissing):  # a claim: from the record or not at all
        measure_claim(cfg, "multi_vs_single", False)
    assert not (tmp_path / "cache" / "artifacts").exists()
    monkeypatch.setenv(replay.ENV_MODE, "sometimes")
    with pytest.raises(Exception, match="UNICHEST_EVIDENCE"):
        replay.mode()


def test_a_claim_on_a_stale_record_has_no_verdict(recorded_world, monkeypatch):
    cfg, _ = recorded_world
    monkeypatch.setenv(replay.ENV_MODE, "recorded")
    fresh = measure_claim(cfg, "multi_vs_single", False)
    assert fresh["evidence"] == "fresh" and fresh["verdict"] != STALE
    monkeypatch.setattr(record, "code_version", lambda *a, **k: "another-version")
    stale = measure_claim(cfg, "multi_vs_single", False)
    assert stale["evidence"] == "stale" and stale["verdict"] == STALE
    assert stale["caption"].startswith("**Stale:**")
    assert np.isclose(stale["mean"], fresh["mean"])


def test_a_damaged_record_part_is_one_line_and_falls_back_to_live(recorded_world,
                                                                   monkeypatch):
    cfg, live = recorded_world
    part = sorted((record.ROOT / cfg.profile / "runs").glob("conquer-only-s1-*/*"))[0]
    (part / "probs.csv.gz").write_bytes(b"not gzip")
    monkeypatch.setenv(replay.ENV_MODE, "recorded")
    with pytest.raises(replay.RecordMissing) as e:
        measures.variant_table(cfg, ["Conquer only"], SRC)
    assert "damaged" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.delenv(replay.ENV_MODE)
    monkeypatch.setattr(store, "is_valid", lambda c, stage: False)
    t = measures.variant_table(cfg, ["Conquer only"], SRC)  # auto: the record fails, live runs
    assert t.attrs["evidence"].status == "live"
    assert np.isclose(t["mean"].iloc[0], live["mean"].iloc[0], atol=1e-6)


def test_ledger_rows_say_where_each_claim_comes_from(recorded_world, monkeypatch):
    cfg, _ = recorded_world
    monkeypatch.setenv(replay.ENV_MODE, "recorded")
    rows = ledger.ledger_rows(cfg, ["multi_vs_single"], full=True)
    assert rows["evidence"].iloc[0] == "fresh"
    assert rows["caption"].iloc[0].startswith("Recorded ")
    assert notebook.evidence_line(rows) == rows["caption"].iloc[0]


def test_the_reproduction_check_puts_a_live_run_next_to_its_recorded_twin(recorded_world,
                                                                          monkeypatch):
    from unichest_lib.evidence.reproduce import reproduction_study

    cfg, _ = recorded_world
    study = reproduction_study(cfg, names=("Conquer only",), sources=SRC)
    t = study.tables["reproduction"]
    assert study.ran and list(t["source"]) == ["chestxray14"]
    # the same checkpoint scored live and read back from the record: no difference
    assert abs(t["difference"].iloc[0]) < 1e-6 and t["inside"].iloc[0]
    assert t["lo"].iloc[0] <= t["recorded"].iloc[0] <= t["hi"].iloc[0]
    # a run the record lacks is left out, and with nothing left the study says so
    none = reproduction_study(cfg, names=("UniChest",), sources=SRC)
    assert not none.ran and "record" in none.note


def test_a_whole_study_is_recorded_and_served_when_its_runs_are_not_stored(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(record, "ROOT", tmp_path / "results")
    cfg = tiny_cfg(cache_dir=str(tmp_path / "cache"))
    calls = []

    def study(c, has_run=True):  # a study that needs one run, stored or not
        calls.append(replay.mode())
        if not has_run:
            replay.no_training(False, "its run")
        return pd.DataFrame({"class": ["a", "b"], "mean": [0.61, 0.72], "ok": [True, False]})

    monkeypatch.setenv(replay.ENV_RECORD, "1")
    live, ev = replay.recorded_study("toy", cfg, study, cfg)
    assert ev.status == "live" and calls == ["auto"]  # nothing recorded: measured
    monkeypatch.delenv(replay.ENV_RECORD)
    again, ev = replay.recorded_study("toy", cfg, study, cfg, has_run=False)
    assert calls[-1] == replay.STORED  # recorded: first tried on the stored runs alone
    assert ev.status == "fresh" and ev.caption.startswith("Recorded ")
    stored_ok, ev2 = replay.recorded_study("toy", cfg, study, cfg)
    assert ev2.status == "live"  # every run stored: this build's own numbers

    def boom(c):
        raise AssertionError("a study whose declared runs are not stored is not run")
    _, ev3 = replay.recorded_study("toy", cfg, boom, cfg, stored=False)
    assert ev3.status == "fresh"
    pd.testing.assert_frame_equal(again, live)
    # nothing recorded under another name: trained live, or None without training
    assert replay.recorded_study("other", cfg, study, cfg, has_run=False, train=False) == (None,
                                                                                        None)
    out, ev = replay.recorded_study("other", cfg, study, cfg, has_run=False)
    assert ev.status == "live" and calls[-1] == "auto"
    # a claim's result (a dict with numpy numbers) goes through the record too
    monkeypatch.setenv(replay.ENV_RECORD, "1")
    replay.recorded_study("claim", cfg, lambda c: {"mean": np.float64(0.1), "seeds": [0, 1]}, cfg)
    monkeypatch.delenv(replay.ENV_RECORD)

    def unstored(c):
        replay.no_training(False, "its run")
    res, ev = replay.recorded_study("claim", cfg, unstored, cfg)
    assert res == {"mean": 0.1, "seeds": [0, 1]} and ev.status == "fresh"
    monkeypatch.setenv(replay.ENV_MODE, "recorded")  # reads, never trains
    with pytest.raises(replay.RecordMissing):
        replay.recorded_study("other", cfg, study, cfg, has_run=False)


def test_a_recorded_study_is_available_to_a_build_that_cannot_train_it(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "ROOT", tmp_path / "results")
    cfg = tiny_cfg(cache_dir=str(tmp_path / "cache"))
    have = {"stored": False}

    @replay.recorded_table("toy-table", lambda c, **kw: have["stored"])
    def table(c, *, level=1, progress=True):
        return pd.DataFrame({"level": [level], "mean": [0.5 + level / 10]})

    assert not table.available(cfg) and not table.available(cfg, level=2)
    have["stored"] = True
    assert table.available(cfg)  # every run stored: measurable without training
    have["stored"] = False
    monkeypatch.setenv(replay.ENV_RECORD, "1")
    table(cfg, level=2, progress=False)  # progress does not name another study
    monkeypatch.delenv(replay.ENV_RECORD)
    assert table.available(cfg, level=2) and not table.available(cfg, level=1)
    out = table(cfg, level=2)
    assert out.attrs["evidence"].status == "fresh" and out["mean"].iloc[0] == pytest.approx(0.7)
    monkeypatch.setattr(record, "code_version", lambda *a, **k: "another-version")
    assert table.available(cfg, level=2)  # a stale record is still shown (without a verdict)


def test_the_full_ledger_is_on_once_every_expensive_claim_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(record, "ROOT", tmp_path / "results")
    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    cfg = tiny_cfg(cache_dir=str(tmp_path / "cache")).replace(profile="tutorial")
    assert not ledger.full_ledger(cfg)
    monkeypatch.setenv(replay.ENV_RECORD, "1")
    for key in ledger.EXPENSIVE[:-1]:
        replay.recorded_study(f"claim-{key}", cfg, lambda c: {"mean": 0.0}, cfg)
    assert not ledger.full_ledger(cfg)  # one claim still missing
    replay.recorded_study(f"claim-{ledger.EXPENSIVE[-1]}", cfg, lambda c: {"mean": 0.0}, cfg)
    assert ledger.full_ledger(cfg) and not ledger.full_ledger(cfg, False)


def test_gated_studies_are_shown_from_the_record(tmp_path, monkeypatch):
    from unichest_lib.evidence import alignment, dials, query_study

    monkeypatch.setattr(record, "ROOT", tmp_path / "results")
    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    cfg = tiny_cfg(cache_dir=str(tmp_path / "cache")).replace(profile="tutorial")
    assert not alignment.alignment_on(cfg) and not query_study.query_text_on(cfg)
    monkeypatch.setenv(replay.ENV_RECORD, "1")
    fake = pd.DataFrame({"x": [1.0]})

    def live(part, c, fn, *a, **k):  # "measured" without training: a fixed table, recorded
        record.write(c.profile, part, {"table": fake}, {"command": "test"}, cfg=c)
        return fake, replay.Evidence("live", "")

    monkeypatch.setattr(replay, "_live", live)
    alignment.alignment_table(cfg, progress=False)
    query_study.query_text_table(cfg, progress=False)
    assert alignment.alignment_on(cfg) and query_study.query_text_on(cfg)
    trained = dials.TRAINED_DIALS["tutorial"]
    dials.full_dial_table(cfg, trained=trained, progress=False)
    dials.full_meaning_by_class(cfg, progress=False)
    monkeypatch.delenv(replay.ENV_RECORD)
    monkeypatch.undo()
    monkeypatch.setattr(record, "ROOT", tmp_path / "results")
    monkeypatch.setattr(dials, "dial_table", lambda *a, **k: pytest.fail("measured live"))
    study = dials.dial_study(cfg, full=False, progress=False)
    assert study.ran and study.tables["dials"].attrs["evidence"].status == "fresh"


def test_a_study_tried_without_training_fails_before_its_costly_part(tmp_path, monkeypatch):
    # tried on the stored runs alone (a default build with a record), the grounding and gate
    # claims must refuse at once when a UniChest run is not stored, not after scoring the
    # baselines or a seed's gates
    from unichest_lib.evidence import claims, grounding_measures

    cfg = tiny_cfg(cache_dir=str(tmp_path / "cache"))

    def costly(*a, **k):
        raise AssertionError("the costly part ran before the untrained run was refused")

    monkeypatch.setattr(grounding_measures, "fit_baselines", costly)
    monkeypatch.setattr(claims, "source_gates", costly)
    monkeypatch.setattr(claims, "variant_model", lambda *a, **k: object())
    monkeypatch.setattr(store, "is_valid", lambda c, stage: c.seed == 0)  # seed 1 not stored
    for fn in (grounding_measures.grounding_baseline_measures, claims.gate_routing):
        with pytest.raises(replay.RecordMissing, match="UniChest"):
            replay.in_mode(replay.STORED, fn, cfg, progress=False)

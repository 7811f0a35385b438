"""Recorded results (``results/<profile>/<study>/``): written with their provenance, read back
as fresh, stale after the code behind them changed, missing, or damaged with a one-line
message (never an exception that would stop the book)."""

from __future__ import annotations

import gzip
import shutil

import pandas as pd
import pytest

from unichest_lib.evidence import record, schedule
from unichest_lib.config import resolve

PROV = dict(commit="abc1234def", cpu="Some CPU", cpu_flags=["avx2"], precision="float32",
            date="2026-12-06T10:00:00Z", command="python bench/x.py --record")


def _runs():
    return pd.DataFrame(dict(epochs=[8, 8, 12, 12], seed=[100, 101, 100, 101],
                             best_epoch=[8, 7, 11, 12], val_aAUC=[0.7, 0.71, 0.72, 0.73],
                             val_all_aAUC=[0.70, 0.72, 0.74, 0.75],
                             test_all_aAUC=[0.7, 0.7, 0.7, 0.7], seconds=[1.0] * 4))


def test_a_written_study_reads_back_fresh_with_its_tables_and_caption(tmp_path):
    tables = dict(runs=_runs(), curves=pd.DataFrame(dict(epoch=[1, 2], val_aAUC=[0.5, 0.6])))
    record.write("tutorial", "demo", tables, PROV, root=tmp_path)
    rec = record.read("tutorial", "demo", root=tmp_path)
    assert rec.status == "fresh" and rec.usable
    pd.testing.assert_frame_equal(rec.tables["runs"], tables["runs"])
    cap = rec.caption()
    assert "2026-12-06" in cap and "Some CPU (avx2)" in cap and "float32" in cap
    assert "abc1234" in cap and "python bench/x.py --record" in cap


def test_recorded_files_are_readable_like_any_other_file(tmp_path):
    import os
    record.write("smoke", "a", dict(runs=_runs()), PROV, root=tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    for f in (tmp_path / "smoke" / "a").iterdir():  # not mkstemp's 0600
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name


def test_the_same_tables_give_the_same_bytes(tmp_path):
    record.write("smoke", "a", dict(runs=_runs()), PROV, root=tmp_path / "1")
    record.write("smoke", "a", dict(runs=_runs()), PROV, root=tmp_path / "2")
    one, two = (record.folder("smoke", "a", tmp_path / d) / "runs.csv.gz" for d in "12")
    assert one.read_bytes() == two.read_bytes()


def test_re_recording_the_same_run_keeps_its_first_provenance_unless_something_changed(
        tmp_path, monkeypatch):
    first = dict(PROV, checkpoint_sha256="aa")
    later = dict(first, date="2026-12-09T10:00:00Z", cpu="Another CPU")
    same = ("checkpoint_sha256",)

    def date_after(prov, runs=_runs()):
        record.write("tutorial", "r", dict(runs=runs), prov, root=tmp_path, same=same)
        return record.read("tutorial", "r", root=tmp_path).provenance["date"]

    assert date_after(first) == first["date"]
    assert date_after(later) == first["date"]  # same scores, same checkpoint: kept
    assert date_after(dict(later, checkpoint_sha256="bb")) == later["date"]  # other checkpoint
    changed = _runs().assign(seconds=2.0)
    assert date_after(dict(first, checkpoint_sha256="bb"), changed) == first["date"]  # other scores
    monkeypatch.setattr(record, "code_version", lambda *a, **k: "another-version")
    assert date_after(later, changed) == later["date"]  # a stale record is rewritten


def test_a_study_recorded_by_other_code_is_stale_and_says_so(tmp_path, monkeypatch):
    record.write("tutorial", "demo", dict(runs=_runs()), PROV, root=tmp_path)
    monkeypatch.setattr(record, "code_version", lambda *a, **k: "another-version")
    rec = record.read("tutorial", "demo", root=tmp_path)
    assert rec.status == "stale" and not rec.usable
    assert rec.caption().startswith("**Stale:**")


def test_a_study_of_another_configuration_is_stale_but_not_for_its_free_fields(tmp_path):
    cfg = resolve("smoke")
    record.write("smoke", "demo", dict(runs=_runs()), PROV, cfg=cfg, free=("conquer_epochs",),
                 root=tmp_path)
    for same in (cfg, cfg.replace(conquer_epochs=7, cache_dir="elsewhere", amp=False)):
        assert record.read("smoke", "demo", cfg=same, root=tmp_path).status == "fresh"
    rec = record.read("smoke", "demo", cfg=cfg.replace(lr=1e-3), root=tmp_path)
    assert rec.status == "stale" and not rec.usable
    assert rec.caption().startswith("**Stale:** the 'smoke' configuration changed since.")


def test_code_version_ignores_docstrings_and_comments_but_not_statements(tmp_path):
    lib = tmp_path / "lib"
    (lib / "training").mkdir(parents=True)
    src = 'def f(x):\n    """Doc."""\n    return x + 1  # one\n'
    (lib / "training" / "losses.py").write_text(src)
    parts = ("training",)
    v0 = record.code_version(parts, lib)
    (lib / "training" / "losses.py").write_text(src.replace("Doc.", "Other words.")
                                                .replace("# one", "# two"))
    assert record.code_version(parts, lib) == v0
    (lib / "training" / "losses.py").write_text(src.replace("x + 1", "x + 2"))
    assert record.code_version(parts, lib) != v0


def test_the_library_code_version_covers_the_training_code():
    # the trainer is part of it: a training change makes the record stale
    assert "training/trainer.py" in record.CODE and "model" in record.CODE
    assert len(record.code_version()) == 16


def test_missing_and_damaged_records_give_one_line(tmp_path):
    rec = record.read("tutorial", "nothing", root=tmp_path)
    assert rec.status == "missing" and "\n" not in rec.message
    out = record.write("tutorial", "demo", dict(runs=_runs()), PROV, root=tmp_path)
    (out / "runs.csv.gz").write_bytes(gzip.compress(b"epochs\n1\n"))  # edited by hand
    rec = record.read("tutorial", "demo", root=tmp_path)
    assert rec.status == "damaged" and "checksum" in rec.message and "\n" not in rec.message
    (out / "provenance.json").write_text("{ not json")
    rec = record.read("tutorial", "demo", root=tmp_path)
    assert rec.status == "damaged" and "\n" not in rec.message and rec.caption() == rec.message
    shutil.rmtree(out)
    assert record.read("tutorial", "demo", root=tmp_path).status == "missing"


def test_schedule_rule_picks_the_shortest_schedule_within_the_tolerance():
    table, chosen = schedule.summary(_runs(), tolerance=0.005)
    assert table["epochs"].tolist() == [8, 12] and chosen == 12  # 0.71 vs 0.745
    assert schedule.summary(_runs(), tolerance=0.05)[1] == 8
    lo, hi = table.loc[1, ["ci_low", "ci_high"]]
    assert lo < 0.745 < hi


def test_schedule_study_shows_a_recorded_study_or_says_it_is_missing(tmp_path, monkeypatch):
    cfg = resolve("smoke")
    monkeypatch.setattr(record, "ROOT", tmp_path)
    study = schedule.schedule_study(cfg)
    assert not study.ran and study.status == "missing" and study.note
    record.write("smoke", schedule.STUDY, dict(runs=_runs(), curves=pd.DataFrame(
        dict(epochs=[8], seed=[100], epoch=[1], val_aAUC=[0.5], val_all_aAUC=[0.5]))),
        dict(PROV, tolerance=0.005))
    study = schedule.schedule_study(cfg)
    assert study.ran and study.status == "fresh" and study.values["chosen"] == 12
    assert study.values["epochs"] == cfg.conquer_epochs and "Recorded" in study.caption
    # the profile's length next to the rule's choice (runs: 8 -> 0.71, 12 -> 0.745)
    at8 = schedule.schedule_study(cfg.replace(conquer_epochs=8)).values
    assert at8["relation"] == "shorter than" and at8["at_edge"] and at8["lengths"] == "8, 12"
    assert at8["gap"] == pytest.approx(0.745 - 0.71)
    assert schedule.schedule_study(cfg.replace(conquer_epochs=12)).values["relation"] == \
        "as long as"

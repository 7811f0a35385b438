"""The alignment study (issue #15, ``unichest_lib.evidence.alignment``): for each way of
scaling L_BCL it reports what the stored runs say — the last epoch's L_BCL from the training
history, its chance value, the learned scale from the checkpoint, and the zero-shot AUC the
claim ``zero_shot_unseen`` computes — each checked against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from unichest_lib import evidence
from unichest_lib.config import resolve
from unichest_lib.evidence import alignment, claims, measures
from unichest_lib.model import BCL_LOGIT_SCALE_INIT, UniChest
from unichest_lib.training import checkpoints, store

from helpers import SOURCES, synth, tiny_cfg


def test_logit_scale_reads_each_setting_and_the_learned_parameter(tmp_path):
    train = synth(SOURCES, 4, 32, 0)
    cfg = tiny_cfg(bcl_variant="learnable")
    m = UniChest(cfg, train.classes)
    with torch.no_grad():
        m.bcl_logit_scale.fill_(3.3)
    path = checkpoints.save(tmp_path / "ck", m, cfg)
    assert alignment.logit_scale(cfg, path) == pytest.approx(math.exp(3.3), rel=1e-6)
    with torch.no_grad():
        m.bcl_logit_scale.fill_(7.0)  # past the clamp: the loss uses 100
    path = checkpoints.save(tmp_path / "ck7", m, cfg)
    assert alignment.logit_scale(cfg, path) == pytest.approx(100.0, rel=1e-6)
    assert alignment.logit_scale(tiny_cfg(tau_bcl=0.25), None) == 4.0
    assert alignment.logit_scale(tiny_cfg(bcl_variant="code"), None) == pytest.approx(
        math.log(1 / 0.07))


# ---- the study --------------------------------------------------------------------------------
def test_final_bcl_is_the_mean_over_the_last_epochs_steps():
    hist = pd.DataFrame({"split": ["train"] * 5 + ["valid"], "epoch": [1, 1, 2, 2, 2, 2],
                         "bcl_loss": [9.0, 8.0, 3.0, 4.0, 8.0, np.nan]})
    assert alignment.final_bcl(hist) == pytest.approx((3.0 + 4.0 + 8.0) / 3)
    with pytest.raises(ValueError, match="no training steps"):
        alignment.final_bcl(hist[hist["split"] == "valid"])


def test_the_chapter_runs_the_study_when_asked_or_when_its_runs_are_stored(tmp_path, monkeypatch):
    from unichest_lib.evidence import ledger

    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    cfg = resolve("tutorial", cache_dir=str(tmp_path))
    assert not alignment.alignment_on(cfg)  # off at tutorial, nothing stored: never trains
    assert alignment.alignment_on(cfg, True) and alignment.alignment_on(resolve("smoke"))
    monkeypatch.setenv(ledger.FULL_ENV, "1")
    assert alignment.alignment_on(cfg)
    monkeypatch.delenv(ledger.FULL_ENV)
    stored = []
    monkeypatch.setattr(store, "is_valid", lambda c, stage: stored.append(
        (c.bcl_variant, c.seed, stage)) or True)
    assert alignment.alignment_on(cfg)  # every run of the study stored: it is shown
    assert sorted(stored) == sorted((s, sd, "conquer") for s in alignment.BCL_SETTINGS
                                    for sd in evidence.SEEDS["tutorial"])


def test_the_chapters_study_is_a_note_when_not_run_and_the_table_with_its_rule_when_run(
        tmp_path, monkeypatch):
    from unichest_lib.evidence import ledger

    monkeypatch.delenv(ledger.FULL_ENV, raising=False)
    cfg = resolve("tutorial", cache_dir=str(tmp_path))
    off = evidence.alignment_study(cfg)
    unmeasured = alignment.alignment_rule(None)
    assert not off.ran and off.tables == {} and math.isnan(off.values.pop("share"))
    assert off.values == {k: v for k, v in unmeasured.items() if k != "share"}
    assert ledger.HOW_TO_RUN in off.note and off.note.endswith("-p full_ledger True.")
    assert not (tmp_path / "artifacts").exists()  # nothing was trained
    table = _table(5.0, 0.01, -0.01)
    monkeypatch.setattr(alignment, "alignment_table", lambda c, progress=True: table)
    on = evidence.alignment_study(cfg, full=True)
    assert on.ran and on.tables["alignment"] is table and on.note == ""
    assert on.values == alignment.alignment_rule(table)


def _table(paper_bcl, vs_lo_code, vs_lo_learn):
    chance = 2 * math.log(16)
    return pd.DataFrame([
        dict(setting="paper", bcl_final=paper_bcl, bcl_chance=chance, vs_paper=0.0, vs_lo=0.0,
             vs_hi=0.0),
        dict(setting="code", bcl_final=2.0, bcl_chance=chance / 2, vs_paper=0.02,
             vs_lo=vs_lo_code, vs_hi=0.05),
        dict(setting="learnable", bcl_final=3.0, bcl_chance=chance, vs_paper=0.04,
             vs_lo=vs_lo_learn, vs_hi=0.08)])


def test_the_rule_as_numbers_names_the_best_setting_and_switches_only_when_both_hold():
    chance = 2 * math.log(16)
    r = alignment.alignment_rule(_table(0.95 * chance, 0.01, 0.01))
    assert r["switch"] and r["better"] == "learnable" and r["near_chance"]
    assert r["share"] == pytest.approx(0.95) and r["better_ci"] == "+0.040 [+0.010, +0.080]"
    learned = alignment.alignment_rule(_table(0.5 * chance, 0.01, 0.01))
    assert not learned["switch"] and not learned["near_chance"] and learned["better"]
    none = alignment.alignment_rule(_table(0.95 * chance, -0.01, -0.01))
    assert not none["switch"] and none["better"] == "" and none["better_ci"] == "n/a"
    with pytest.raises(ValueError, match="no 'paper' row"):
        alignment.alignment_rule(_table(5.0, 0, 0).iloc[1:])
    unmeasured = alignment.alignment_rule(None)
    assert not unmeasured["switch"] and unmeasured["better_ci"] == "n/a"


def test_setting_configs_change_only_the_scaling_of_l_bcl():
    cfg = resolve("smoke", tau_bcl=0.5)
    assert alignment.setting_config(cfg, "paper") == cfg
    for s in ("code", "learnable"):
        c = alignment.setting_config(cfg, s)
        assert (c.bcl_variant, c.tau_bcl) == (s, 1.0)
        assert c.replace(bcl_variant="paper", tau_bcl=0.5) == cfg
    with pytest.raises(ValueError, match="settings"):
        alignment.alignment_table(cfg, ["clip"])


def test_the_study_reports_what_the_stored_runs_say(tmp_path):
    cfg = resolve("smoke", cache_dir=str(tmp_path), image_size=32, max_steps_per_epoch=3,
                  amp=False)
    table = alignment.alignment_table(cfg, ["paper", "learnable"], seeds=(0,), n_boot=20,
                                      progress=False)
    assert list(table["setting"]) == ["paper", "learnable"]
    for _, row in table.iterrows():
        c = alignment.setting_config(cfg, row["setting"])
        hist = evidence.variant_history(c, "Conquer only", 0, progress=False)
        steps = hist[(hist["split"] == "train") & (hist["epoch"] == hist["epoch"].max())]
        assert row["bcl_final"] == pytest.approx(float(np.mean(steps["bcl_loss"])))
        assert row["bcl_chance"] == pytest.approx(2 * math.log(cfg.batch_size))
        zs = measures.macro_measure(c, "Conquer only", claims.zero_shot_sources(c),
                                    seen=False, seeds=(0,), n_boot=20, progress=False)
        assert row["zero_shot"] == pytest.approx(zs.points.mean())
    paper, learn = table.iloc[0], table.iloc[1]
    assert paper["scale"] == 1.0 and paper["vs_paper"] == 0.0
    assert abs(math.log(learn["scale"]) - BCL_LOGIT_SCALE_INIT) < 3 * cfg.lr * 3  # 3 AdamW steps
    assert learn["vs_paper"] == pytest.approx(learn["zero_shot"] - paper["zero_shot"])
    assert alignment.alignment_rule(table)["share"] == pytest.approx(
        paper["bcl_final"] / paper["bcl_chance"])

"""The command line: every Config field is an option by name; bad input fails before work."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from unichest_lib import cli
from unichest_lib.config import Config, ConfigError, resolve


def test_every_config_field_is_an_option():
    options = {a.dest for a in cli.build_parser()._actions}
    assert {f.name for f in dataclasses.fields(Config)} <= options


def test_options_override_the_profile_by_name():
    args, cfg = cli.parse(["divide", "--profile", "smoke", "--K", "3", "--lam", "0.25",
                           "--sources", "chestxray14,vindr", "--val_source", "vindr", "--resume",
                           "--amp", "false"])
    assert args.verb == "divide" and args.resume
    assert (cfg.profile, cfg.K, cfg.lam, cfg.sources, cfg.amp) == (
        "smoke", 3, 0.25, ("chestxray14", "vindr"), False)


def test_unknown_option_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"--lamda \(did you mean --lam\?\)"):
        cli.parse(["conquer", "--lamda", "0.3"])


@pytest.mark.parametrize("argv, words", [
    (["conquer", "--K", "0"], ["'K'", "0", ">= 1"]),
    (["conquer", "--K", "2.5"], ["'K'", "2.5"]),
    (["divide", "--lam", "1.5"], ["'lam'", "1.5", "[0, 1]"]),
    (["conquer", "--image_size", "100"], ["image_size", "100", "multiple of 32"]),
    (["conquer", "--batch_size", "1"], ["batch_size", ">= 2"]),
])
def test_bad_values_fail_with_the_parameter_value_and_range(argv, words):
    with pytest.raises(ConfigError) as e:
        cli.parse(argv)
    for w in words:
        assert w in str(e.value)


def test_main_exits_2_with_a_message_and_no_traceback():
    r = subprocess.run([sys.executable, "-m", "unichest_lib", "conquer", "--profile", "smoke",
                        "--K", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "error: parameter 'K' = 0" in r.stderr and "Traceback" not in r.stderr


def test_unknown_profile_is_refused_by_argparse():
    with pytest.raises(SystemExit):
        cli.parse(["conquer", "--profile", "huge"])


def test_a_start_checkpoint_needs_an_explicit_run_folder():
    with pytest.raises(ConfigError, match="--out-dir"):
        cli.parse(["divide", "--profile", "smoke", "--conquer-checkpoint", "x"])
    args, _ = cli.parse(["divide", "--profile", "smoke", "--conquer-checkpoint", "x",
                         "--out-dir", "run"])
    assert args.conquer_checkpoint == "x" and args.out_dir == "run"


def test_training_verbs_go_through_the_store_unless_given_a_run_folder(monkeypatch, tmp_path):
    """Without --out-dir the artifact store trains (under its lock) and files the checkpoint
    where the chapters find it; with it, the stage writes there and the store is not asked."""
    from unichest_lib.training import stages, store

    asked = []
    monkeypatch.setattr(store, "stage_checkpoint",
                        lambda cfg, stage, progress: asked.append(stage) or tmp_path / "checkpoint")
    monkeypatch.setattr(store, "manifest", lambda cfg, stage: {"best_metric": 0.5})
    args, cfg = cli.parse(["divide", "--profile", "smoke", "--no-progress"])
    assert cli.run(args, cfg) == tmp_path / "checkpoint" and asked == ["divide"]

    ran = []
    monkeypatch.setattr(stages, "conquer", lambda cfg, out_dir, **kw: ran.append((out_dir, kw))
                        or type("R", (), {"best_metric": 0.5, "checkpoint": "c"})())
    args, cfg = cli.parse(["conquer", "--profile", "smoke", "--out-dir", str(tmp_path),
                           "--resume"])
    cli.run(args, cfg)
    assert ran == [(str(tmp_path), {"progress": True, "resume": True})] and asked == ["divide"]


# ---- list-valued options ------------------------------------------------------------------
@pytest.mark.parametrize("form", ['["chestxray14", "vindr"]', "[chestxray14, vindr]",
                                  " chestxray14 , vindr "])
def test_a_tuple_option_takes_a_json_list_or_commas(form):
    _, ref = cli.parse(["conquer", "--profile", "smoke", "--sources", "chestxray14,vindr",
                        "--downstream", "siim,openi"])
    _, cfg = cli.parse(["conquer", "--profile", "smoke", "--sources", form,
                        "--downstream", '["siim","openi"]'])
    assert cfg == ref and cfg.sources == ("chestxray14", "vindr")
    assert cfg.downstream == ("siim", "openi")
    assert resolve("smoke", sources=form) == resolve("smoke", sources=["chestxray14", "vindr"])


def test_an_unknown_source_in_a_json_list_is_refused_by_name(capsys):
    argv = ["conquer", "--profile", "smoke", "--sources", '["chestxray14","chexprt"]']
    with pytest.raises(ConfigError, match=r"'sources' has unknown source\(s\) \['chexprt'\]"):
        cli.parse(argv)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: parameter 'sources'") and "chexprt" in err
    with pytest.raises(ConfigError, match="a JSON list"):  # not a list of names at all
        cli.parse(["conquer", "--sources", '["chestxray14", '])


def test_help_says_what_each_option_takes():
    text = " ".join(cli.build_parser().format_help().split())
    assert "--sources A,B names: a,b or a JSON list" in text
    assert "default mimic,chestxray14,chexpert,vindr" in text
    assert "--image_size INT integer; default smoke 64 / tutorial 128 / paper 512" in text
    assert "check-data" in text and "--debug" in text


# ---- errors: one line, no traceback -------------------------------------------------------
def _yaml(tmp_path, datasets):
    p = tmp_path / "real.yml"
    p.write_text(yaml.safe_dump({"datasets": datasets}))
    return str(p)


def _train(tmp_path, data, *extra):
    return ["conquer", "--profile", "smoke", "--data", data, "--sources", "chexpert",
            "--val_source", "chexpert", "--out-dir", str(tmp_path / "run"),
            "--cache_dir", str(tmp_path / "cache"), "--no-progress", *extra]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


def test_a_yaml_lacking_a_source_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "sz").mkdir()
    data = _yaml(tmp_path, {"shenzhen": {"imgpath": str(tmp_path / "sz")}})
    assert cli.main(_train(tmp_path, data)) == 2
    assert "no entry for source(s) ['chexpert']" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_a_missing_image_folder_is_one_line_and_exit_1(tmp_path, capsys):
    data = _yaml(tmp_path, {"chexpert": {"imgpath": str(tmp_path / "nowhere")}})
    assert cli.main(_train(tmp_path, data)) == 1
    err = _one_line_error(capsys)
    assert "image folder" in err and "nowhere" in err and "does not exist" in err


def test_debug_raises_with_the_traceback(tmp_path, capsys):
    data = _yaml(tmp_path, {"chexpert": {"imgpath": str(tmp_path / "nowhere")}})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cli.main(_train(tmp_path, data, "--debug"))
    r = subprocess.run([sys.executable, "-m", "unichest_lib", *_train(tmp_path, data, "--debug")],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 1 and "Traceback" in r.stderr and "FileNotFoundError" in r.stderr


def test_an_incompatible_checkpoint_is_one_line_and_exit_1(monkeypatch, tmp_path, capsys):
    from unichest_lib.training import checkpoints, store

    (tmp_path / "checkpoint.json").write_text("{not json")
    (tmp_path / "checkpoint.safetensors").write_bytes(b"")
    monkeypatch.setattr(store, "stage_checkpoint",
                        lambda cfg, stage, progress: tmp_path / "checkpoint")
    with pytest.raises(checkpoints.CheckpointError):  # what the real loader raises
        store.load_model(resolve("smoke"), "divide")
    assert cli.main(["evaluate", "--profile", "smoke", "--no-progress"]) == 1
    assert "checkpoint.json is not valid JSON" in _one_line_error(capsys)


@pytest.mark.parametrize("exc, code, words", [
    (KeyboardInterrupt(), 130, "error: interrupted"),
    (ValueError("bad value\nsecond line"), 1, "error: bad value second line"),
    (RuntimeError("boom"), 1, "error: RuntimeError: boom (--debug shows the traceback)"),
    (ConfigError("bad setting"), 2, "error: bad setting"),
])
def test_every_error_becomes_one_line_and_its_exit_code(monkeypatch, capsys, exc, code, words):
    def fail(args, cfg):
        raise exc

    monkeypatch.setattr(cli, "run", fail)
    assert cli.main(["divide", "--profile", "smoke"]) == code
    assert _one_line_error(capsys).strip() == words
    with pytest.raises(type(exc)):
        cli.main(["divide", "--profile", "smoke", "--debug"])


def test_options_for_another_verb_are_usage_errors(tmp_path):
    with pytest.raises(ConfigError, match="only check-data takes a file"):
        cli.parse(["conquer", "my.yml"])
    with pytest.raises(ConfigError, match="evaluate"):
        cli.parse(["conquer", "--split", "valid"])
    with pytest.raises(ConfigError, match="two data files"):
        cli.parse(["check-data", "a.yml", "--data", "b.yml"])


# ---- evaluate: a summary on screen, the full table next to the checkpoint -----------------
def _tidy(rng, task_sources, classes=("a", "b", "c", "d")):
    """A hand-made tidy table: random values, some classes undefined, some values NaN, and
    macro rows holding junk (the summary must not read them)."""
    rows = []
    for task, src in task_sources:
        for c in classes + ("macro",):
            defined = bool(rng.random() < 0.7) if c != "macro" else True
            for m in (("AUC", "F1", "ACC", "AP") if c != "macro" else ("aAUC", "aF1", "aACC", "mAP")):
                v = float(rng.random()) if rng.random() < 0.9 else float("nan")
                rows.append(dict(task=task, source=src, split="test", **{"class": c}, metric=m,
                                 value=v if c != "macro" else -1.0, defined=defined))
    return pd.DataFrame(rows)


def test_summarise_takes_the_mean_over_defined_classes_per_task_and_source():
    from unichest_lib.evaluation.summary import format_summary, summarise

    rng = np.random.default_rng(3)
    pairs = [("in-domain", "vindr"), ("in-domain", "mimic"), ("zero-shot", "siim")]
    df = _tidy(rng, pairs)
    got = summarise(df)
    assert list(zip(got["task"], got["source"])) == pairs  # in order of appearance
    records = df.to_dict("records")
    for _, row in got.iterrows():  # the slow obvious way
        mine = [r for r in records if (r["task"], r["source"]) == (row["task"], row["source"])
                and r["class"] != "macro" and r["defined"]]
        for metric, name in (("AUC", "aAUC"), ("F1", "aF1"), ("ACC", "aACC"), ("AP", "mAP")):
            vals = [r["value"] for r in mine if r["metric"] == metric and not math.isnan(r["value"])]
            want = sum(vals) / len(vals) if vals else float("nan")
            assert row[name] == pytest.approx(want, nan_ok=True)
        assert row["classes"] == len({r["class"] for r in mine})
    text = format_summary(got)
    assert len(text.splitlines()) == 4 and "aAUC" in text and "zero-shot" in text


def test_summarise_agrees_with_the_macro_rows_of_real_metrics():
    from unichest_lib.evaluation import metrics
    from unichest_lib.evaluation.summary import summarise

    rng = np.random.default_rng(0)
    y = (rng.random((60, 5)) < 0.4).astype(float)
    y[:, 4] = 0  # undefined: no positive
    per_class = metrics.classification_metrics(y, rng.random((60, 5)), None, list("abcde"))
    got = summarise(metrics.to_tidy(per_class, source="s")).iloc[0]
    for k, name in metrics.MACRO_NAMES.items():
        assert got[name] == pytest.approx(per_class.attrs[name])
    assert got["classes"] == 4


def test_evaluate_prints_the_summary_and_writes_the_table_next_to_the_checkpoint(
        monkeypatch, tmp_path, capsys):
    from unichest_lib.evaluation import classification
    from unichest_lib.training import store

    rng = np.random.default_rng(1)
    folder = tmp_path / "divide-0123"
    monkeypatch.setattr(store, "stage_checkpoint",
                        lambda cfg, stage, progress: folder / "checkpoint")
    monkeypatch.setattr(store, "load_model", lambda cfg, stage, progress: "model")
    ind = _tidy(rng, [("x", s) for s in ("mimic", "vindr")]).drop(columns="task")
    zs = _tidy(rng, [("x", "siim")]).drop(columns="task")
    asked = []
    monkeypatch.setattr(classification, "in_domain", lambda m, cfg, split: asked.append(split) or ind)
    monkeypatch.setattr(classification, "zero_shot",
                        lambda m, cfg, sources, split: asked.append(sources) or zs)
    assert cli.main(["evaluate", "--profile", "smoke", "--split", "valid", "--no-progress",
                     "--downstream", "siim,chestxdet10"]) == 0
    assert asked == ["valid", ("siim",)]  # chestxdet10 is for grounding only
    out = capsys.readouterr().out
    path = folder / "checkpoint.evaluation_valid.csv"
    assert str(path) in out and [p.name for p in folder.iterdir()] == [path.name]  # no temp left
    saved = pd.read_csv(path)
    assert len(saved) == len(ind) + len(zs) and set(saved["task"]) == {"in-domain", "zero-shot"}
    mimic = ind[(ind["source"] == "mimic") & (ind["metric"] == "AUC") & ind["defined"]
                & (ind["class"] != "macro")]["value"].mean()
    line = next(l for l in out.splitlines() if "mimic" in l)
    assert line.split()[:3] == ["in-domain", "mimic", f"{mimic:.3f}"]
    assert len(out.splitlines()) < 10  # a summary, not the raw table

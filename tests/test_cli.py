"""The command line: every Config field is an option by name; bad input fails before work."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from unichest_lib import cli
from unichest_lib.config import Config, ConfigError


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
    monkeypatch.setattr(store, "checkpoint", lambda cfg, stage, progress: asked.append(stage)
                        or tmp_path / "checkpoint")
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

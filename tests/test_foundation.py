"""The skeleton: the package imports, the book config parses, every profile resolves."""

from __future__ import annotations

import pathlib

import pytest
import yaml

import unichest_lib
from unichest_lib.config import PROFILES, ConfigError, profile_defaults, resolve

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_package_version_is_the_one_pyproject_declares():
    """The version is part of every store key: it must be the project's, not a fallback."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert unichest_lib.__version__ == declared


def test_book_config_is_at_root_and_parses():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["title"]
    # a broken chapter must fail the build, not only warn
    assert cfg["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
    assert (ROOT / "book" / f"{toc['root']}.md").exists()


@pytest.mark.parametrize("name", PROFILES)
def test_each_profile_resolves(name):
    cfg = resolve(name)
    assert cfg.profile == name
    assert cfg.image_size % 32 == 0


def test_paper_profile_matches_section_IV_B():
    c = profile_defaults("paper")
    assert (c.backbone, c.image_size, c.batch_size, c.lr) == ("resnet50", 512, 32, 1e-5)
    assert (c.conquer_epochs, c.divide_epochs, c.n_decoder_layers) == (30, 20, 4)
    assert (c.K, c.lam, c.scl_dim, c.tau_scl, c.tau_bcl) == (4, 0.5, 32, 1.0, 1.0)


def test_override_by_name_and_string_coercion():
    c = resolve("smoke", K="3", lam="0.3", sources="chestxray14,vindr", val_source="vindr")
    assert (c.K, c.lam, c.sources) == (3, 0.3, ("chestxray14", "vindr"))


@pytest.mark.parametrize(
    "overrides, words",
    [
        (dict(K=0), ["'K'", "0", ">= 1"]),
        (dict(K=2.5), ["'K'", "2.5"]),
        (dict(lam=1.5), ["'lam'", "1.5", "[0, 1]"]),
        (dict(image_size=100), ["'image_size'", "100", "multiple of 32"]),
        (dict(batch_size=1), ["'batch_size'", "1"]),
        (dict(sources=()), ["'sources'", "empty"]),
        (dict(sources=("chestxray14", "nowhere")), ["nowhere", "sources"]),
        (dict(lamda=0.3), ["'lamda'", "did you mean 'lam'"]),
    ],
)
def test_bad_values_name_parameter_value_and_range(overrides, words):
    with pytest.raises(ConfigError) as e:
        resolve("smoke", **overrides)
    for w in words:
        assert w in str(e.value)


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        resolve("huge")


def test_config_roundtrip_through_dict():
    c = resolve("tutorial", K=2)
    assert type(c).from_dict(c.to_dict()) == c

"""notebook.setup validates parameters before any work and picks the profile in a fixed order."""

import pytest

from unichest_lib.book import notebook
from unichest_lib.config import ConfigError


def test_explicit_profile_parameter_wins_over_environment(monkeypatch, capsys):
    monkeypatch.setenv(notebook.PROFILE_ENV, "smoke")
    cfg = notebook.setup("tutorial")
    assert cfg.profile == "tutorial"
    assert "profile from parameter" in capsys.readouterr().out


def test_environment_sets_profile_when_parameter_is_none(monkeypatch, capsys):
    monkeypatch.setenv(notebook.PROFILE_ENV, "smoke")
    cfg = notebook.setup(None, seed=3)
    assert (cfg.profile, cfg.seed) == ("smoke", 3)
    out = capsys.readouterr().out
    assert notebook.PROFILE_ENV in out and "embedded procedural world" in out


def test_default_profile_is_tutorial(monkeypatch):
    monkeypatch.delenv(notebook.PROFILE_ENV, raising=False)
    assert notebook.setup(None, quiet=True).profile == "tutorial"


def test_bad_environment_profile_is_named(monkeypatch):
    monkeypatch.setenv(notebook.PROFILE_ENV, "huge")
    with pytest.raises(ConfigError, match="UNICHEST_PROFILE"):
        notebook.setup(None)


@pytest.mark.parametrize("params, word", [({"K": 0}, "'K'"), ({"lamda": 0.5}, "lam"),
                                          ({"heterogeneity": 2.0}, "heterogeneity")])
def test_bad_parameters_fail_before_any_work(params, word):
    with pytest.raises(ConfigError, match=word):
        notebook.setup("smoke", quiet=True, **params)


def test_none_parameters_keep_the_profile_value():
    assert notebook.setup("smoke", quiet=True, K=None).K == 4


def test_finish_reports_wall_time(capsys):
    notebook.setup("smoke", quiet=True)
    t = notebook.finish()
    assert t >= 0 and "Wall time" in capsys.readouterr().out


def test_notebook_only_parameters_are_checked_with_named_errors():
    assert notebook.check_int("n", 3) == 3
    for bad in (0, 2.5, True, "3"):
        with pytest.raises(ConfigError, match="'n'"):
            notebook.check_int("n", bad)
    assert notebook.check_choice("maps", ["tsne"], ("tsne", "umap")) == ["tsne"]
    with pytest.raises(ConfigError, match="pca"):
        notebook.check_choice("maps", ["tsne", "pca"], ("tsne", "umap"))


def test_cards_markdown_demotes_card_headings_under_its_own():
    import pandas as pd

    table = pd.DataFrame([
        {"name": "x", "title": "X data", "kind": "real", "licence": "CC-BY",
         "body": "# X data\n\nSome text.\n\n## Pitfalls\n\nMany."},
        {"name": "y", "title": "Y", "kind": "embedded", "licence": "MIT", "body": "Text."}])
    from unichest_lib.book import tables

    md = tables.cards_markdown(table, "real")
    assert md.startswith("### X data (`x`)") and "* **licence**: CC-BY" in md
    assert "#### Pitfalls" in md and "\n# X data" not in md and "(`y`)" not in md
    assert "No data cards" in tables.cards_markdown(table.iloc[:0], "real")


def test_relative_cache_dir_is_anchored_at_the_checkout_root(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]  # the checkout this test belongs to
    cfg = notebook.setup("smoke", quiet=True)
    assert Path(cfg.cache_dir) == root / ".cache" / "unichest"
    explicit = notebook.setup("smoke", quiet=True, cache_dir=str(tmp_path))
    assert explicit.cache_dir == str(tmp_path)


def test_wrap_keeps_lines_within_the_book_width():
    from unichest_lib.book import notebook

    text = "classes (24): " + ", ".join(f"finding number {i}" for i in range(24))
    lines = notebook.wrap(text).splitlines()
    assert len(lines) > 1 and max(map(len, lines)) <= notebook.WIDTH
    assert " ".join(line.strip() for line in lines) == text
    report = "FINDINGS: " + "word " * 30 + "\n\nIMPRESSION: no acute process."
    wrapped = notebook.wrap(report, indent=0)
    assert "\n\nIMPRESSION: no acute process." in wrapped  # its own line breaks are kept
    assert max(map(len, wrapped.splitlines())) <= notebook.WIDTH


def test_readable_renames_headers_but_not_values_or_row_labels():
    import pandas as pd

    df = pd.DataFrame({"protocol": ["probe", "probe"], "n_train": [3, 30],
                       "metric": ["AUC", "AUC"], "value": [0.5, 0.7],
                       "row_id": ["a_b", "c_d"]})
    flat = notebook.readable(df.set_index("row_id"))
    assert list(flat.columns) == ["protocol", "training images", "metric", "value"]
    assert flat.index.name == "row id" and list(flat.index) == ["a_b", "c_d"]
    assert flat["training images"].tolist() == [3, 30]
    assert "n_train" in df.columns  # the original is not changed

    wide = df.pivot_table(index=["protocol", "n_train"], columns="metric", values="value")
    shown = notebook.readable(wide)
    assert shown.index.names == ["protocol", "training images"]
    assert shown.columns.names == ["metric"] and list(shown.columns) == ["AUC"]
    assert shown.to_numpy().tolist() == wide.to_numpy().tolist()

    multi = df.pivot_table(index="protocol", columns=["metric", "n_train"], values="value")
    shown = notebook.readable(multi)
    assert shown.columns.names == ["metric", "training images"]
    assert list(shown.columns) == [("AUC", 3), ("AUC", 30)]
    assert notebook.header("conquer_aAUC") == "Conquer aAUC" and notebook.header(3) == 3

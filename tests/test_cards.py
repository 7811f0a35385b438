"""Every source in code has a data card, and every card has a source in code."""

import pandas as pd
import pytest

from unichest_lib.config import ALL_SOURCES
from unichest_lib.data import cards, real


@pytest.fixture(scope="module")
def table():
    return cards.load_cards()


def test_every_real_dataset_has_a_card_and_vice_versa(table):
    names = set(table.loc["real", "name"]) if "real" in table.index.get_level_values(0) else set()
    assert names == set(real.REAL_DATASETS)


def test_every_embedded_source_has_a_card_and_vice_versa():
    files = {p.stem.removeprefix("embedded_") for p in cards.CARDS_DIR.glob("embedded_*.md")}
    assert files == set(ALL_SOURCES), (
        f"missing embedded cards: {sorted(set(ALL_SOURCES) - files)}; "
        f"cards without a source: {sorted(files - set(ALL_SOURCES))}")


def test_real_cards_state_the_label_space_the_code_uses(table):
    for name in real.REAL_DATASETS:
        row = table.loc[("real", name)]
        assert set(row["label_space"]) == set(real.observed_classes(name)), name
        assert row["access"] == real.get(name).access, name


def test_malformed_cards_fail_clearly(tmp_path):
    (tmp_path / "siim.md").write_text("# no front matter\n")
    with pytest.raises(cards.CardError, match="siim.md.*'---'"):
        cards.load_cards(tmp_path)
    (tmp_path / "siim.md").write_text("---\nname: other\ntitle: t\nkind: real\naccess: a\n"
                                      "licence: l\nlabel_space: []\n---\nbody\n")
    with pytest.raises(cards.CardError, match="must match the file name"):
        cards.load_cards(tmp_path)
    (tmp_path / "siim.md").write_text("---\nname: siim\n---\n")
    with pytest.raises(cards.CardError, match="lacks field"):
        cards.load_cards(tmp_path)


def test_stats_match_the_shipped_csv_counted_directly():
    s = cards.stats("siim").set_index("class")
    raw = pd.read_csv(real.parsers._xrv().datapath + "/siim-pneumothorax-train-rle.csv.gz")
    positive = raw[raw[" EncodedPixels"].str.strip() != "-1"]["ImageId"].nunique()
    assert s.loc["(all)", "positive"] == raw["ImageId"].nunique()
    assert s.loc["pneumothorax", "positive"] == positive
    assert s.loc["pneumothorax", "negative"] == raw["ImageId"].nunique() - positive


def test_cli_stats_prints_a_table(capsys):
    assert cards.main(["stats", "siim"]) == 0
    assert "pneumothorax" in capsys.readouterr().out


def test_book_page_shows_each_embedded_cards_generation_settings(table):
    from unichest_lib.book import tables

    embedded = tables.cards_markdown(table, "embedded")
    card = table.loc[("embedded", "chestxdet10")]
    section = embedded.split("### ")[1 + list(table.loc["embedded"].index).index("chestxdet10")]
    assert f"**label space** ({len(card['label_space'])})" in section
    for group, values in card["dials"].items():
        for k, v in values.items():  # every dial the card sets is on the page
            assert f"{k} {v}" in section, (group, k)
    assert "**dials**" not in tables.cards_markdown(table, "real")

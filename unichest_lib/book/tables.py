"""Library results as tables a chapter shows: the data cards as Markdown, the parameters of
each query network, the mean gate weight of each source, and the evidence's tables in the form
a reader reads them: ``mean [lo, hi]`` cells (:func:`with_intervals`, :func:`transfer_wide`,
:func:`query_text_views`), the claims ledger (:func:`ledger_table`) and the long form the
interval figures draw (:func:`interval_rows`).

Introduced in ``notebooks/00_data.ipynb`` (cards) and ``notebooks/03_divide.ipynb``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..config import Config
from ..model import count_parameters

if TYPE_CHECKING:
    import pandas as pd

_CARD_FIELDS = ("role", "access", "licence", "provenance", "citation")


def cards_markdown(table, kind: str) -> str:
    """The data cards of one ``kind`` ("real" or "embedded") of
    :func:`unichest_lib.data.cards.load_cards` as Markdown: per card, a heading, a short field
    list and the card's own text with its headings demoted under the heading."""
    import re

    if len(table) == 0 or "kind" not in table:
        return "*No data cards found in `data_cards/`.*"
    parts = []
    for _, card in table[table["kind"] == kind].iterrows():
        body = re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ",
                      card["body"], flags=re.M)
        body = re.sub(r"\A### [^\n]*\n", "", body)  # the card's own title: we print ours
        fields = [f"* **{f}**: {card[f]}" for f in _CARD_FIELDS
                  if f in card and isinstance(card[f], str) and card[f]]
        if isinstance(card.get("stats_command"), str):
            fields.append(f"* **stats_command**: `{card['stats_command']}`")
        parts.append(f"### {card['title']} (`{card['name']}`)\n\n" + "\n".join(fields)
                     + _generation_block(card) + f"\n\n{body}\n")
    return "\n".join(parts) or f"*No data cards of kind {kind!r}.*"


def _generation_block(card) -> str:
    """An embedded card's generation settings (label space, images per profile, the
    ``dials`` that differ from the neutral world) as Markdown; '' for a real card."""

    def value(key):
        v = card.get(key)
        return v if isinstance(v, (dict, list)) else None

    label_space, n_images, dials = value("label_space"), value("n_images"), value("dials")
    if not (label_space or n_images or dials):
        return ""
    out = []
    if label_space:
        out.append(f"* **label space** ({len(label_space)}): {', '.join(label_space)}")
    if n_images:
        out.append("* **images**: " + ", ".join(f"{n} at `{p}`" for p, n in n_images.items()))
    if dials:
        groups = "; ".join(f"{group}: " + ", ".join(f"{k} {v}" for k, v in sorted(vals.items()))
                           for group, vals in dials.items() if isinstance(vals, dict) and vals)
        out.append("* **dials** (the values that differ from the neutral world, at "
                   f"`heterogeneity = 1`): {groups or 'none'}")
    return "\n" + "\n".join(out)


def query_network_table(model) -> "pd.DataFrame":
    """Trainable parameters of each query network of ``model`` (QN¹ = shared, then the K−1
    experts, which are stored stacked and share nothing), plus the gate Φ1 and projection Φ2.
    """
    import pandas as pd

    n = count_parameters
    k = model.cfg.K
    rows = [dict(part="QN1 (shared)", role="query network", parameters=n(model.qn1))]
    per_expert = n(model.experts) // (k - 1) if k > 1 else 0
    rows += [dict(part=f"QN{j} (expert)", role="query network", parameters=per_expert)
             for j in range(2, k + 1)]
    if k > 1:
        rows += [dict(part="gate Φ1", role="ω = softmax(Φ1(Ī))", parameters=n(model.gate)),
                 dict(part="projection Φ2", role="ω̄ = Φ2(ω), for L_SCL",
                      parameters=n(model.scl_proj))]
    return pd.DataFrame(rows).set_index("part")


def parameter_table(model) -> "pd.DataFrame":
    """Parameters of each part of ``model`` (image encoder, text encoder, QN¹, experts, gate
    Φ1, projection Φ2, the learnable logit scale of L_BCL where there is one), how many of
    them the current stage trains and how many are frozen, with a total row. Introduced in
    ``notebooks/02_conquer.ipynb``; chapter 03 shows it before and after the encoders freeze."""
    import pandas as pd

    parts = [("image encoder Φ_image", "image_encoder"), ("text encoder Φ_text", "text_encoder"),
             ("QN1 (shared)", "qn1"), ("experts QN2..QNK", "experts"), ("gate Φ1", "gate"),
             ("projection Φ2", "scl_proj")]
    rows = []
    for label, attr in parts:
        module = getattr(model, attr, None)
        if module is None:
            continue
        ps = list(module.parameters())
        rows.append(dict(part=label, parameters=sum(p.numel() for p in ps),
                         trainable=sum(p.numel() for p in ps if p.requires_grad)))
    scale = getattr(model, "bcl_logit_scale", None)
    if scale is not None:
        rows.append(dict(part="logit scale of L_BCL", parameters=1, trainable=int(scale.requires_grad)))
    df = pd.DataFrame(rows).set_index("part")
    df.loc["total"] = df.sum()
    df["frozen"] = df["parameters"] - df["trainable"]
    return df


def mean_gate_by_source(model, cfg: Config, sources=None, split: str = "valid") -> "pd.DataFrame":
    """Mean gate weights ω (Eq. 5) per source: rows sources, columns experts QN2..QNK.
    Each row sums to 1; a source that leans on one expert has one large value.
    Introduced in ``notebooks/03_divide.ipynb``."""
    import pandas as pd
    import torch

    from ..data import make_dataset
    from ..model.inference import gate_weights

    if model.stage != "divide" or model.cfg.K < 2:
        raise ValueError(f"mean_gate_by_source needs a Divide-stage model with K >= 2 "
                         f"(got stage {model.stage!r}, K={model.cfg.K})")
    rows = {}
    for src in tuple(cfg.sources if sources is None else sources):
        omega = gate_weights(model, make_dataset(cfg, [src], split), cfg)
        rows[src] = torch.from_numpy(omega).mean(0).numpy()
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=[f"QN{j}" for j in range(2, model.cfg.K + 1)])


# ---- the evidence's tables, as a reader reads them --------------------------------------------
def with_intervals(df: "pd.DataFrame", index: str | Sequence[str], columns: str,
                   digits: int = 3) -> "pd.DataFrame":
    """A pivot of ``mean [lo, hi]`` strings of a table with ``mean``, ``lo`` and ``hi``
    columns (e.g. :func:`unichest_lib.evidence.variant_table`): ``index`` down the side,
    one column per value of ``columns``; "n/a" where the mean is not finite."""
    import numpy as np

    cell = [f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(m) else "n/a"
            for m, lo, hi in zip(df["mean"], df["lo"], df["hi"])]
    return df.assign(cell=cell).pivot(index=index, columns=columns, values="cell")


def interval_rows(table: "pd.DataFrame", column: str, label: str) -> "pd.DataFrame":
    """``table`` in the long form :func:`~unichest_lib.book.figures.interval_bars` draws:
    ``variant`` = ``label``, and ``mean`` / ``lo`` / ``hi`` from ``column`` and its ``_lo`` /
    ``_hi`` columns (those of :func:`unichest_lib.evidence.headroom_table` and of the dial
    table of :func:`unichest_lib.evidence.dial_study`)."""
    return table.assign(variant=label, mean=table[column], lo=table[f"{column}_lo"],
                        hi=table[f"{column}_hi"])


def transfer_wide(table: "pd.DataFrame", digits: int = 3) -> "pd.DataFrame":
    """:func:`unichest_lib.evidence.transfer_table` as one row per protocol, portion and
    ``n_train`` and one ``mean [lo, hi]`` column per encoder, then per difference, in the
    table's order (its ``geometry`` rows left out: :func:`transfer_geometry` shows them)."""
    import pandas as pd

    table = table[table["kind"].isin(["score", "difference"])]
    rows = ["protocol", "portion", "n_train"]
    wide = with_intervals(table, rows, "encoder", digits)
    order = pd.MultiIndex.from_frame(table[rows].drop_duplicates())
    return wide.reindex(index=order, columns=list(dict.fromkeys(table["encoder"])))


def table_i_wide(table: "pd.DataFrame", digits: int = 3) -> "pd.DataFrame":
    """:func:`unichest_lib.evidence.per_class.table_i` as a reader's table: one row per class
    (the mean first) with its test positives, one ``mean [lo, hi]`` column per model and for
    the difference (in the table's order), and the difference's verdict."""
    rows, cols = list(dict.fromkeys(table["row"])), list(dict.fromkeys(table["class"]))
    wide = with_intervals(table, "class", "row", digits).reindex(index=cols, columns=rows)
    diff = table[table["verdict"].isin(("holds", "contradicted", "inconclusive"))]
    wide["verdict"] = diff.set_index("class")["verdict"].reindex(cols).fillna("")
    n_pos = table.drop_duplicates("class").set_index("class")["n_pos"].reindex(cols)
    wide.insert(0, "positives", [str(int(n)) if n >= 0 else "" for n in n_pos])
    wide.columns.name = None
    return wide


def transfer_geometry(table: "pd.DataFrame", digits: int = 3) -> "pd.DataFrame":
    """The ``geometry`` rows of :func:`unichest_lib.evidence.transfer_table`: one row per
    quantity, one ``mean [lo, hi]`` column per encoder (t-interval over seeds)."""
    geo = table[table["kind"] == "geometry"]
    return with_intervals(geo, "setting", "encoder", digits).reindex(
        index=list(dict.fromkeys(geo["setting"])), columns=list(dict.fromkeys(geo["encoder"])))


def transfer_facts(table: "pd.DataFrame", pretrained: str = "UniChest",
                   control: str = "random init") -> dict[str, float]:
    """The numbers chapter 04 quotes about the linear probe, read off
    :func:`unichest_lib.evidence.transfer_table` (means over seeds): per encoder (``pre`` =
    ``pretrained``, ``rand`` = ``control``) the participation ratio (``*_pr``), the top
    direction's share (``*_top``) and Ī's share in the class queries' span (``*_span``); at
    10 % the probe's AUC (``*_auc10``), the share of single subsets below 0.5
    (``*_below10``) and the sd between one seed's subsets (``*_sd10``); the difference at
    10 % and 100 % (``diff10``, ``diff100``); the subsets per seed and images at 10 %."""
    from ..evidence.transfer import GEOMETRY

    geo = table[table["kind"] == "geometry"].set_index(["encoder", "setting"])["mean"]
    probe = table[(table["protocol"] == "linear probe")]
    score = probe[probe["kind"] == "score"].set_index(["encoder", "portion"])
    diff = probe[probe["kind"] == "difference"].set_index(["encoder", "portion"])["mean"]
    out = {}
    for tag, enc in (("pre", pretrained), ("rand", control)):
        for key, name in zip(("pr", "top", "span"), GEOMETRY):
            out[f"{tag}_{key}"] = float(geo.get((enc, name), float("nan")))
        for key, col in (("auc10", "mean"), ("below10", "below_half"), ("sd10", "subset_sd")):
            out[f"{tag}_{key}"] = float(score[col].get((enc, 0.1), float("nan")))
    for p, key in ((0.1, "diff10"), (1.0, "diff100")):
        out[key] = float(diff.get((f"{pretrained} − {control}", p), float("nan")))
    out["subsets"] = int(score["n_subsets"].get((pretrained, 0.1), 0))
    out["n10"] = int(score["n_train"].get((pretrained, 0.1), 0))
    return out


def query_text_views(table: "pd.DataFrame") -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """Two tables of ``mean [lo, hi]`` strings read off the query-text table of
    :func:`unichest_lib.evidence.query_text_study`: the AUC, and its difference from the
    names-trained model; rows (source, query mode), one column per ``query_text`` value."""
    from ..config import QUERY_TEXTS

    auc = with_intervals(table, ["source", "by"], "query_text")
    diff = table[table["query_text"] != "name"].assign(
        mean=lambda t: t["vs_name"], lo=lambda t: t["vs_lo"], hi=lambda t: t["vs_hi"])
    vs = (with_intervals(diff, ["source", "by"], "query_text").add_suffix(" − name")
          if len(diff) else diff)
    order = [v for v in QUERY_TEXTS if v in set(table["query_text"])]
    return auc[order], vs


def ledger_table(rows: "pd.DataFrame") -> "pd.DataFrame":
    """The claims ledger as the book shows it (rows of
    :func:`unichest_lib.evidence.ledger_rows` or :func:`~unichest_lib.evidence.chapter_claims`):
    one row per claim, readable columns."""
    import numpy as np
    import pandas as pd

    from ..evaluation.stats import fmt_interval

    return pd.DataFrame({
        "chapter": rows["chapter"], "claim": rows["claim"], "paper": rows["paper"],
        "ours (mean [95 % CI])": [fmt_interval(m, lo, hi) for m, lo, hi in
                                 zip(rows["mean"], rows["lo"], rows["hi"])],
        "smallest detectable": [f"{v:.3f}" if v is not None and np.isfinite(v) else "n/a"
                                for v in rows["mde"]],
        "seeds": rows["n_seeds"], "verdict": rows["verdict"],
    }).set_index("claim")


__all__ = ["cards_markdown", "interval_rows", "ledger_table", "mean_gate_by_source",
           "parameter_table", "query_network_table", "query_text_views", "table_i_wide",
           "transfer_facts", "transfer_geometry", "transfer_wide", "with_intervals"]

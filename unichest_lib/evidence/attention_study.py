"""Why UniChest's attention does (not) point at lesions, measured over seeds and patients:
chapter 04's diagnosis of its grounding numbers.

Two studies on the grounding source's test split:

- :func:`attention_table`: where the cross-attention goes
  (:func:`unichest_lib.evaluation.attention_diagnosis.lesion_attention`), for every query
  network, decoder layer and head, and for the mixed map the pointing game reads, per lesion
  class: normalised entropy, lift (attention mass on the lesion / the lesion's share of the
  image; 1 = a uniform map) and the patch-level peak-in-lesion rate. Mean over the profile's
  seeds, 95 % interval over seeds and test patients (:class:`.measures.Measure`), every seed
  and variant on one set of patient resamples. It needs the trained models, so it is a
  recorded study.
- :func:`global_statistics_table`: per lesion class, the test AUC of a logistic regression on
  each image's grey-level histogram (no position at all) next to UniChest's own AUC on the same
  images (its scores, live or recorded), both with patient-bootstrap intervals. A class that
  the histogram already separates needs no localisation to be classified.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import Config
from ..data import make_dataset
from ..evaluation import attention_diagnosis as AD
from ..evaluation import stats
from . import replay
from .measures import (N_BOOT, Measure, Scored, Study, class_auc_replicates,
                       patient_weights)
from .per_class import class_measures
from .variants import SEEDS, stored, variant_config, variant_model

#: The map scores a row of :func:`attention_table` holds (``metric``).
MAP_METRICS = ("entropy", "lift", "peak_in_lesion")
ALL = "all lesions"
ATTENTION_COLUMNS = ("variant", "part", "network", "layer", "head", "class", "metric", "n",
                     "mean", "lo", "hi", "n_seeds", "per_seed")


def _group_replicates(d: pd.DataFrame, w: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
    """(point, replicates (B,)) of each map metric over the lesions of ``d`` (rows
    ``d["lesion"]`` of the patient weights ``w``); lift as a ratio of weighted means."""
    ww = w[:, d["lesion"].to_numpy()]
    tot = ww.sum(1)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ("entropy", "peak_in_lesion", "lesion_mass", "lesion_share"):
            v = d[k].to_numpy(np.float64)
            out[k] = (v.mean(), np.where(tot > 0, ww @ v / tot, np.nan))
        mass, share = out.pop("lesion_mass"), out.pop("lesion_share")
        out["lift"] = (mass[0] / share[0], mass[1] / share[1])
    return out


def _groups(rows: pd.DataFrame):
    """(part, network, layer, head, class) keys and their rows of one seed's lesion maps."""
    heads = rows[rows["network"] != "mixed"]
    for (net, lay, hd), d in heads.groupby(["network", "layer", "head"], sort=True):
        yield ("head", str(net), int(lay), int(hd), ALL), d
    mixed = rows[rows["network"] == "mixed"]
    yield ("mixed", "mixed", -1, -1, ALL), mixed
    for cls, d in mixed.groupby("class", sort=True):
        yield ("mixed", "mixed", -1, -1, cls), d


def _attention_stored(cfg: Config, **kw) -> bool:
    return stored(cfg, list(kw.get("variants", ("UniChest",))))


@replay.recorded_table("attention", _attention_stored)
def attention_table(cfg: Config, *, source: str = "chestxdet10",
                    variants: Sequence[str] = ("UniChest",), progress: bool = True
                    ) -> pd.DataFrame:
    """Entropy, lift and peak-in-lesion of the cross-attention (columns of
    :data:`ATTENTION_COLUMNS`): ``part`` "head" (one network, layer and head, over all lesions)
    or "mixed" (the map the pointing game reads, over all lesions and per ``class``)."""
    seeds = SEEDS[cfg.profile]
    n_boot = N_BOOT[cfg.profile]
    patients = np.asarray(make_dataset(cfg, [source], "test").table.patients)
    points: dict = {}
    reps: dict = {}
    sizes: dict = {}
    w = None
    for v in variants:
        for i, seed in enumerate(seeds):
            model = variant_model(cfg, v, seed, progress=progress)
            rows = AD.lesion_attention(model, variant_config(cfg, v, seed), source)
            lesions = rows[rows["network"] == "mixed"][["row", "class"]].reset_index(drop=True)
            if w is None:  # the same lesions for every seed and variant: one resample set
                w = patient_weights(patients[lesions["row"].to_numpy()], n_boot,
                                    f"attention/{source}")
            index = {(r, c): k for k, (r, c) in enumerate(lesions.itertuples(index=False))}
            rows = rows.assign(lesion=[index[r, c] for r, c in zip(rows["row"], rows["class"])])
            for key, d in _groups(rows):
                sizes[key] = len(d["lesion"].unique())
                for metric, (p, r) in _group_replicates(d, w).items():
                    points.setdefault((v, *key, metric), np.full(len(seeds), np.nan))[i] = p
                    reps.setdefault((v, *key, metric),
                                    np.full((len(seeds), n_boot), np.nan))[i] = r
    out = []
    for k, p in points.items():
        s = Measure(p, reps[k], {}).summary()
        top = np.inf if k[-1] == "lift" else 1.0  # a normal interval may spill over the range
        out.append(dict(zip(ATTENTION_COLUMNS[:7], k), n=sizes[k[1:6]],
                        mean=s["mean"], lo=max(s["lo"], 0.0), hi=min(s["hi"], top),
                        n_seeds=s["n_seeds"],
                        per_seed=", ".join(f"{x:.3f}" for x in p)))
    return pd.DataFrame(out, columns=list(ATTENTION_COLUMNS))


@replay.with_evidence
def global_statistics_table(cfg: Config, *, source: str = "chestxdet10",
                            variant: str = "UniChest", progress: bool = True) -> pd.DataFrame:
    """Per class of ``source`` with enough test positives: test AUC of the grey-level histogram
    probe (:func:`~unichest_lib.evaluation.attention_diagnosis.global_statistics_scores`,
    one fit) and of ``variant`` (mean over seeds), each with its 95 % interval over test
    patients (and seeds), on the same patient resamples; columns class, n_pos, method, mean,
    lo, hi."""
    probs, te = AD.global_statistics_scores(cfg, source)
    model, table = class_measures(cfg, variant, source, progress=progress)
    t = te.table
    hist = Scored(probs=probs, labels=np.nan_to_num(t.labels, nan=0.0), mask=t.mask,
                  patients=np.asarray(t.patients), classes=tuple(te.classes),
                  seen=(True,) * len(te.classes))
    cols = [te.classes.index(c) for c in model if c != "mean"]
    w = patient_weights(hist.patients, N_BOOT[cfg.profile], f"{source}/test/{cfg.heterogeneity}")
    auc = class_auc_replicates(hist, w, cols)
    n_pos = table.set_index("class")["n_pos"]
    rows = []
    for k, j in enumerate(cols):
        cls = te.classes[j]
        for method, m in (("grey-level histogram", Measure(auc[None, 0, k], auc[None, 1:, k], {})),
                          (variant, model[cls])):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                s = stats.pooled_interval(m.points, m.reps)
            rows.append({"class": cls, "n_pos": int(n_pos[cls]), "method": method,
                         "mean": s["mean"], "lo": max(s["lo"], 0.0), "hi": min(s["hi"], 1.0)})
    return pd.DataFrame(rows, columns=["class", "n_pos", "method", "mean", "lo", "hi"])


def grounding_diagnosis(cfg: Config, *, source: str = "chestxdet10",
                        variants: Sequence[str] = ("UniChest",), progress: bool = True) -> Study:
    """Both studies as one :class:`.measures.Study`: tables ``attention``
    (:func:`attention_table`) and ``global`` (:func:`global_statistics_table`), each carrying
    where its numbers come from (``attrs["evidence"]``); ``values`` holds the mixed map's
    entropy and lift over all lesions of the first variant (mean, lo, hi)."""
    att = attention_table(cfg, source=source, variants=tuple(variants), progress=progress)
    glob = global_statistics_table(cfg, source=source, variant=variants[0], progress=progress)
    mixed = att[(att["variant"] == variants[0]) & (att["part"] == "mixed")
                & (att["class"] == ALL)].set_index("metric")
    values = {m: tuple(float(mixed.loc[m, c]) for c in ("mean", "lo", "hi"))
              for m in MAP_METRICS}
    ev = att.attrs.get("evidence")
    return Study(ran=True, tables={"attention": att, "global": glob}, values=values,
                 status=getattr(ev, "status", "live"), caption=getattr(ev, "caption", ""))


__all__ = ["ALL", "ATTENTION_COLUMNS", "MAP_METRICS", "attention_table",
           "global_statistics_table", "grounding_diagnosis"]

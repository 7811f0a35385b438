"""The book's evidence: every comparison it draws a conclusion from, over training seeds,
with 95 % intervals resampled by patient, against its matched control.

A **variant** is a named, stored training run (:data:`VARIANTS`): UniChest itself and the
controls the paper's claims need — the Conquer checkpoint Divide starts from, Conquer
continued for as many steps as Divide adds (compute-matched), Divide with K = 1 (no
experts), without L_SCL, with equal gate weights, and Conquer on one source. Each comes from
:mod:`unichest_lib.store` (trained once per configuration and seed).

For every (variant, seed) the test split of each source is scored once and the per-class
AUCs are bootstrapped with **the same patient resamples** for every variant and seed
(:func:`unichest_lib.stats.cluster_weights`), so differences between two variants are
paired. A comparison's interval is :func:`unichest_lib.stats.pooled_interval`: it counts the
spread between seeds *and* the test-set sampling. Classes with fewer than :data:`MIN_POS`
positives or negatives in a test split are flagged and left out of the macro means.

:data:`CLAIMS` lists the claims of the paper the book tests; :func:`measure` turns each into
a row of the **claims ledger** with the paper's number, ours with its interval, the smallest
effect the comparison could detect, and a verdict from :func:`unichest_lib.stats.verdict`.
Every number is cached on disk (``<cache_dir>/evidence``), keyed by the configuration, the
seeds and the checkpoints, so the chapters and the ledger share one computation.

Introduced in ``notebooks/06_claims.ipynb``; chapters 02–05 show their own claims.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import tempfile
import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import checkpoints, stats, store
from .config import Config, ConfigError

#: Training seeds per profile (the world's seed stays fixed: one test set, many models).
SEEDS = {"smoke": (0, 1), "tutorial": (0, 1, 2), "paper": (0, 1, 2)}
#: Bootstrap replicates per profile.
N_BOOT = {"smoke": 200, "tutorial": 1000, "paper": 2000}
#: A class needs this many positives *and* negatives in a test split to enter a macro mean
#: (per profile; the smoke world's test splits are tiny).
MIN_POS = {"smoke": 2, "tutorial": 5, "paper": 10}
#: The (K, λ) grid of the robustness claim (paper Fig. 8: K 3–5, λ 0.3–0.7) per profile.
GRID = {"smoke": ((2, 4), (0.5,)), "tutorial": ((3, 4, 5), (0.3, 0.5, 0.7)),
        "paper": ((3, 4, 5), (0.3, 0.5, 0.7))}
#: Heterogeneity levels compared by the "gain grows with heterogeneity" claim.
LEVELS = (0.0, 1.0)
ALPHA = 0.05
#: Claims that need many extra runs per seed (the λ×K grid's Divide runs; a Conquer on label
#: text; Conquer and its continued control in a second world): measured when ``full`` is on
#: (see :data:`FULL`).
EXPENSIVE = ("lam_k_robust", "reports_vs_labels", "gain_grows")
#: Per profile: whether the book measures the :data:`EXPENSIVE` claims by default. At
#: ``tutorial`` they would more than double the book's training time (measured in the README).
FULL = {"smoke": True, "tutorial": False, "paper": True}
#: The verdict of a claim that was not measured in this run (not a statistical verdict).
NOT_RUN = "not run"


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named training run: its store ``stage`` and the overrides of the base config."""

    name: str
    stage: str  # "conquer", "divide" or "continued" (see unichest_lib.store.STAGES)
    overrides: tuple[tuple[str, object], ...]
    role: str


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("UniChest", "divide", (), "Conquer, then Divide with K query networks (Eqs. 4, 7)"),
    Variant("Conquer only", "conquer", (), "the Conquer checkpoint that Divide starts from"),
    Variant("Conquer continued", "continued", (),
            "compute-matched control: Conquer trained for as many more epochs as Divide adds"),
    Variant("K = 1", "divide", (("K", 1),),
            "Divide without experts: QN1 alone, same schedule on the frozen encoder"),
    Variant("no L_SCL", "divide", (("scl_weight", 0.0),),
            "Divide without the source contrastive loss (weight 0 in Eq. 7)"),
    Variant("equal weights", "divide", (("gate", "uniform"),),
            "Divide with every expert weighted 1/(K-1): no gate, no L_SCL (paper Table VI)"),
    Variant("one source", "conquer", (("sources", "<val_source>"),),
            "Conquer trained on the validation source alone (paper Table VI, first row)"),
)}


def variant_config(cfg: Config, name: str, seed: int | None = None, **extra) -> Config:
    """The configuration of variant ``name`` (and ``seed``) built from the base ``cfg``."""
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant {name!r}; choose one of {list(VARIANTS)}")
    over = {k: ((cfg.val_source,) if v == "<val_source>" else v)
            for k, v in VARIANTS[name].overrides}
    if seed is not None:
        over["seed"] = seed
    return cfg.replace(**over, **extra)


def checkpoint(cfg: Config, name: str, seed: int | None = None, *, progress: bool = True,
               **extra) -> pathlib.Path:
    """The stored checkpoint of variant ``name`` (trained first when missing)."""
    c = variant_config(cfg, name, seed, **extra)
    return store.checkpoint(c, VARIANTS[name].stage, progress=progress)


def load(cfg: Config, name: str, seed: int | None = None, *, progress: bool = True, **extra):
    """The trained model of variant ``name``, in eval mode (the one way chapters get one)."""
    c = variant_config(cfg, name, seed, **extra)
    return store.load_model(c, VARIANTS[name].stage, progress=progress)


# ---- cached predictions -------------------------------------------------------------------
_WORLD_FIELDS = ("data", "world_seed", "heterogeneity", "image_size", "n_per_source",
                 "n_downstream", "n_valid", "n_test", "cache_dir")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_save_npz(path: pathlib.Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclasses.dataclass
class Scored:
    """One model's probabilities on one split of one source, with what the statistics need."""

    probs: np.ndarray  # (n, c)
    labels: np.ndarray  # (n, c) 0/1
    mask: np.ndarray  # (n, c) observed
    patients: np.ndarray  # (n,)
    classes: tuple[str, ...]
    seen: tuple[bool, ...]  # class among the model's training classes


_MODELS: dict[str, object] = {}
#: Test-split patches of each Conquer encoder (shared by the Divide runs that start from it).
_EVAL_FEATURES: dict[str, object] = {}


def _model(path: pathlib.Path, cfg: Config, stage: str):
    key = str(path)
    if key not in _MODELS:
        if len(_MODELS) >= 4:
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = checkpoints.load(path, cfg if stage == "divide" else None).eval()
    return _MODELS[key]


def scored(cfg: Config, name: str, seed: int, source: str, *, split: str = "test",
           by: str = "name", progress: bool = True, **extra) -> Scored:
    """Probabilities of variant ``name`` (seed) on ``source``'s ``split``, cached on disk by
    checkpoint checksum, data and query mode (``.npz`` of plain arrays, no pickle)."""
    from . import evaluate
    from .data import make_dataset

    c = variant_config(cfg, name, seed, **extra)
    path = checkpoint(cfg, name, seed, progress=progress, **extra)
    sha = checkpoints.read_meta(path)["sha256"]
    d = cfg.to_dict()
    key = _digest({"sha": sha, "world": {f: d[f] for f in _WORLD_FIELDS}, "source": source,
                   "split": split, "by": by})
    file = pathlib.Path(cfg.cache_dir) / "evidence" / "predictions" / f"{key[:24]}.npz"
    ds = make_dataset(cfg, [source], split)
    meta = checkpoints.read_meta(path)
    seen = tuple(k in meta["classes"] for k in ds.classes)
    probs = None
    if file.is_file():
        try:
            with np.load(file, allow_pickle=False) as z:
                probs = z["probs"]
        except (OSError, ValueError, KeyError):  # a damaged cache file: recompute it
            probs = None
        if probs is not None and probs.shape != (len(ds), len(ds.classes)):
            probs = None
    if probs is None:
        model = _model(path, c, VARIANTS[name].stage)
        feats = None
        if VARIANTS[name].stage == "divide":  # frozen encoder: encode the split once per seed
            from . import features as F

            start = meta["extra"].get("run_key", "").rsplit(":", 1)[-1]  # its Conquer's sha256
            fkey = f"eval:{start}:{ds.name}:{len(ds)}:{c.image_size}:{c.amp}:{c.channels_last}"
            feats = _EVAL_FEATURES.get(fkey)
            if feats is None:
                feats = F.encode(model, ds, c)
                if len(_EVAL_FEATURES) >= 16:
                    _EVAL_FEATURES.pop(next(iter(_EVAL_FEATURES)))
                _EVAL_FEATURES[fkey] = feats
        probs = evaluate.predict(model, ds, c, by=by, features=feats).probs
        _atomic_save_npz(file, probs=probs)
    t = ds.table
    return Scored(probs=probs, labels=np.nan_to_num(t.labels, nan=0.0), mask=t.mask,
                  patients=np.asarray(t.patients), classes=tuple(ds.classes), seen=seen)


# ---- bootstrap of class AUCs -------------------------------------------------------------------
def class_auc_replicates(s: Scored, weights: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """(B + 1, len(columns)) AUCs: row 0 on the full split, rows 1.. on the resamples."""
    w = np.vstack([np.ones((1, weights.shape[1])), weights])
    out = np.full((len(w), len(columns)), np.nan)
    for k, j in enumerate(columns):
        m = s.mask[:, j]
        out[:, k] = stats.weighted_auc(s.labels[m, j], s.probs[m, j], w[:, m])
    return out


def kept_columns(s: Scored, *, seen: bool | None = None, min_pos: int = 5
                 ) -> tuple[list[int], pd.DataFrame]:
    """Columns with at least ``min_pos`` positives and negatives (optionally only seen or
    unseen classes), and a table of every class's n, n_pos and whether it was kept."""
    n = s.mask.sum(0)
    n_pos = (s.labels * s.mask).sum(0)
    rows, keep = [], []
    for j, c in enumerate(s.classes):
        if seen is not None and s.seen[j] != seen:
            continue
        ok = n_pos[j] >= min_pos and n[j] - n_pos[j] >= min_pos
        rows.append(dict(**{"class": c}, n=int(n[j]), n_pos=int(n_pos[j]), kept=bool(ok)))
        if ok:
            keep.append(j)
    return keep, pd.DataFrame(rows)


def _weights(patients: np.ndarray, n_boot: int, tag: str) -> np.ndarray:
    seed = int(hashlib.sha256(tag.encode()).hexdigest()[:8], 16)
    return stats.cluster_weights(patients, n_boot, np.random.default_rng(seed))


@dataclasses.dataclass
class Measure:
    """One quantity over seeds: ``points`` (n_seeds,) and ``reps`` (n_seeds, B) replicates
    on shared resamples; ``info`` says what it was computed on."""

    points: np.ndarray
    reps: np.ndarray
    info: dict

    def __sub__(self, other: "Measure") -> "Measure":
        return Measure(self.points - other.points, self.reps - other.reps,
                       {**self.info, "minus": other.info.get("what", "")})

    def summary(self, *, kind: str = "greater", margin: float = 0.0) -> dict:
        out = stats.summarise(self.points, self.reps, alpha=ALPHA, kind=kind, margin=margin)
        out["per_seed"] = [float(v) for v in self.points]
        return out


def macro_measure(cfg: Config, name: str, sources: Sequence[str], *, split: str = "test",
                  by: str = "name", seen: bool | None = None, seeds=None, n_boot=None,
                  progress: bool = True, **extra) -> Measure:
    """Mean over ``sources`` of each source's macro AUC (kept classes; ``seen`` selects
    seen/unseen classes only), for every seed, with bootstrap replicates."""
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    points = np.zeros(len(seeds))
    reps = np.zeros((len(seeds), n_boot))
    tables = []
    for src in sources:
        for i, seed in enumerate(seeds):
            s = scored(cfg, name, seed, src, split=split, by=by, progress=progress, **extra)
            cols, table = kept_columns(s, seen=seen, min_pos=MIN_POS[cfg.profile])
            if i == 0:
                w = _weights(s.patients, n_boot, f"{src}/{split}/{cfg.heterogeneity}")
                tables.append(table.assign(source=src))
            if not cols:  # nothing measurable: NaN, and the verdict says inconclusive
                points[i], reps[i] = np.nan, np.nan
                continue
            auc = class_auc_replicates(s, w, cols)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a resample without positives
                macro = np.nanmean(auc, axis=1)
            points[i] += macro[0] / len(sources)
            reps[i] += macro[1:] / len(sources)
    info = dict(what=name, sources=list(sources), split=split, seeds=list(seeds),
                n_boot=n_boot, classes=pd.concat(tables, ignore_index=True))
    return Measure(points, reps, info)


def variant_table(cfg: Config, names: Sequence[str], sources: Sequence[str] | None = None, *,
                  split: str = "test", by: str = "name", seen: bool | None = None,
                  mean_row: bool = True, progress: bool = True, **extra) -> pd.DataFrame:
    """aAUC of each variant on each source (and their mean), over the profile's seeds:
    columns variant, source, mean, lo, hi (pooled 95 % interval), n_seeds, per_seed,
    n_images, n_classes (kept) and flagged (classes left out, with their positives)."""
    sources = tuple(cfg.sources if sources is None else sources)
    rows = []
    for name in names:
        parts = [(s, [s]) for s in sources] + ([("mean", list(sources))]
                                               if mean_row and len(sources) > 1 else [])
        for label, srcs in parts:
            m = macro_measure(cfg, name, srcs, split=split, by=by, seen=seen,
                              progress=progress, **extra)
            summ = m.summary()
            t = m.info["classes"]
            rows.append(dict(variant=name, source=label, mean=summ["mean"], lo=summ["lo"],
                             hi=summ["hi"], n_seeds=summ["n_seeds"],
                             per_seed=", ".join(f"{v:.3f}" for v in m.points),
                             n_classes=int(t["kept"].sum()),
                             flagged=", ".join(f"{r['class']} ({r['n_pos']})"
                                               for _, r in t[~t["kept"]].iterrows())))
    return pd.DataFrame(rows)


def metric_table(cfg: Config, names: Sequence[str], sources: Sequence[str] | None = None, *,
                 split: str = "test", progress: bool = True) -> pd.DataFrame:
    """aF1, aACC and mAP (max-F1 thresholds, as the paper) of each variant and source over
    the profile's seeds, macro over the kept classes: columns variant, source, metric, mean,
    lo, hi (t-interval over seeds), n_seeds. aAUC with its bootstrap interval is
    :func:`variant_table`."""
    from . import metrics

    sources = tuple(cfg.sources if sources is None else sources)
    seeds = SEEDS[cfg.profile]
    rows = []
    for name in names:
        for src in sources:
            per = {k: [] for k in ("aF1", "aACC", "mAP")}
            for seed in seeds:
                s = scored(cfg, name, seed, src, split=split, progress=progress)
                cols, _ = kept_columns(s, min_pos=MIN_POS[cfg.profile])
                pc = metrics.classification_metrics(s.labels[:, cols], s.probs[:, cols],
                                                    s.mask[:, cols], [s.classes[j] for j in cols])
                for k, v in (("aF1", "F1"), ("aACC", "ACC"), ("mAP", "AP")):
                    per[k].append(float(pc.attrs[k]) if cols else float("nan"))
            for k, vals in per.items():
                si = stats.seed_interval(np.array(vals), ALPHA)
                rows.append(dict(variant=name, source=src, metric=k, mean=si["mean"],
                                 lo=si["lo"], hi=si["hi"], n_seeds=si["n"]))
    return pd.DataFrame(rows)


def grounding_by_class(cfg: Config, *, source: str = "chestxdet10", progress: bool = True
                       ) -> pd.DataFrame:
    """Pointing game of UniChest per lesion class over the profile's seeds, next to the
    random-peak baseline (the mean lesion area fraction): columns class, n (instances),
    mean, lo, hi (pooled interval over seeds and patients), random."""
    from . import evaluate

    seeds = SEEDS[cfg.profile]
    n_boot = N_BOOT[cfg.profile]
    insts = [evaluate.grounding_instances(load(cfg, "UniChest", sd, progress=progress),
                                          variant_config(cfg, "UniChest", sd), source)
             for sd in seeds]
    rows = []
    for cls in sorted(insts[0]["class"].unique()):
        pts, reps = [], []
        for inst in insts:
            d = inst[inst["class"] == cls]
            hit = d["hit"].to_numpy(float)
            w = _weights(d["patient"].to_numpy(), n_boot, f"ground/{source}/{cls}")
            pts.append(hit.mean())
            tot = w.sum(1)  # a resample may draw no patient with this lesion: NaN, skipped
            reps.append(np.where(tot > 0, (w @ hit) / np.maximum(tot, 1e-12), np.nan))
        pi = stats.pooled_interval(np.array(pts), np.array(reps), ALPHA)
        d0 = insts[0][insts[0]["class"] == cls]
        rows.append({"class": cls, "n": len(d0), "mean": pi["mean"], "lo": pi["lo"],
                     "hi": pi["hi"], "random": float(d0["area"].mean())})
    return pd.DataFrame(rows)


def with_intervals(df: pd.DataFrame, index: str | Sequence[str], columns: str,
                   digits: int = 3) -> pd.DataFrame:
    """A pivot of ``mean [lo, hi]`` strings (a table a reader can read intervals from)."""
    cell = [f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(m) else "n/a"
            for m, lo, hi in zip(df["mean"], df["lo"], df["hi"])]
    return df.assign(cell=cell).pivot(index=index, columns=columns, values="cell")


# ---- the claims -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim of the paper the book tests. ``kind``/``margin`` feed
    :func:`unichest_lib.stats.verdict`; ``paper`` is the paper's number with its source."""

    key: str
    chapter: str
    text: str
    effect: str  # what is measured, in words
    paper: str
    kind: str = "greater"
    margin: float = 0.0


CLAIMS: tuple[Claim, ...] = (
    Claim("multi_vs_single", "02",
          "Multi-source Conquer beats Conquer on one source (in-domain on that source)",
          "aAUC(Conquer, all sources) - aAUC(Conquer, one source), test split of val_source",
          "+0.054 aAUC on ChestX-ray14 (Table VI: 0.8468 vs 0.7933, single-source KAD)"),
    Claim("unichest_vs_conquer", "03", "UniChest beats its own Conquer stage",
          "mean in-domain aAUC(UniChest) - aAUC(Conquer only)",
          "+0.012 aAUC on ChestX-ray14 (Table VI: 0.8584 vs 0.8468)"),
    Claim("unichest_vs_continued", "03",
          "UniChest beats Conquer trained for the same number of extra steps",
          "mean in-domain aAUC(UniChest) - aAUC(Conquer continued)", "not reported"),
    Claim("gate_routes", "03", "The gate routes images by source",
          "accuracy of predicting the source from the gate weights omega minus the majority share",
          "not measured (stated in Section III-C3)"),
    Claim("zero_shot_unseen", "04", "Zero-shot on classes no source labels beats chance",
          "mean AUC of UniChest on the unseen classes of the downstream sources - 0.5",
          "Shenzhen TB AUC 0.950 (Table VI; TB is a VinDr class there); PadChest unseen "
          "classes above chance (Fig. 6)"),
    Claim("grounding_vs_random", "04", "The attention points at lesions better than a random peak",
          "pointing-game hit rate - expected hit rate of a uniformly random peak (lesion area)",
          "qualitative (Fig. 7)"),
    Claim("transfer_vs_random", "04", "Pre-training helps transfer",
          "linear-probe AUC on the transfer source: pre-trained minus randomly initialised encoder",
          "not reported (Table II compares pre-trained models only)"),
    Claim("experts_vs_k1", "05", "Experts beat a single query network (K = 1)",
          "mean in-domain aAUC(UniChest) - aAUC(K = 1)", "not reported (Fig. 8 has K = 3-5)"),
    Claim("scl_matters", "05", "The source contrastive loss helps",
          "mean in-domain aAUC(UniChest) - aAUC(no L_SCL)",
          "not reported alone (the equal-weights row removes gate and L_SCL together)"),
    Claim("gate_vs_equal", "05", "A learned gate beats equal expert weights",
          "mean in-domain aAUC(UniChest) - aAUC(equal weights)",
          "+0.006 aAUC on ChestX-ray14 (Table VI: 0.8584 vs 0.8528)"),
    Claim("lam_k_robust", "05", "lambda and K change aAUC by under 0.01",
          "largest |aAUC(K, lambda) - aAUC(K=4, lambda=0.5)| over the grid, mean in-domain",
          "range of aAUC under 1 % over K 3-5, lambda 0.3-0.7 (Fig. 8)",
          kind="equivalent", margin=0.01),
    Claim("reports_vs_labels", "05", "Report entities beat label concatenation as the text",
          "mean in-domain aAUC of Conquer: report entities - label concatenation",
          "+0.012 aAUC (Table VII: 0.8831 vs 0.8716)"),
    Claim("gain_grows", "05", "Divide's gain grows with source heterogeneity",
          "[UniChest - Conquer continued] at heterogeneity 1 minus the same at 0",
          "not testable on real data (the paper's motivation, Section I)"),
)
CLAIM_KEYS = tuple(c.key for c in CLAIMS)


def equivalence_verdict(intervals: Sequence[tuple[float, float]], margin: float) -> str:
    """Verdict of "every effect lies within +-margin" over several intervals: holds when
    every interval lies inside, contradicted when one lies wholly outside, else inconclusive."""
    per = [stats.verdict(lo, hi, kind="equivalent", margin=margin) for lo, hi in intervals]
    if per and all(v == "holds" for v in per):
        return "holds"
    if any(v == "contradicted" for v in per):
        return "contradicted"
    return "inconclusive"


# ---- measuring each claim ---------------------------------------------------------------------
def _in_domain(cfg, name, **kw) -> Measure:
    return macro_measure(cfg, name, cfg.sources, **kw)


def _grid_configs(cfg: Config):
    Ks, lams = GRID[cfg.profile]
    return [(k, x) for k in Ks for x in lams if not (k == cfg.K and x == cfg.lam)]


def _measure_claim(cfg: Config, key: str, progress: bool) -> dict:
    """Measure one claim: a dict with the summary fields, the split sizes and the seeds."""
    kw = dict(progress=progress)
    if key == "multi_vs_single":
        src = [cfg.val_source]
        m = macro_measure(cfg, "Conquer only", src, **kw) - macro_measure(cfg, "one source", src, **kw)
    elif key == "unichest_vs_conquer":
        m = _in_domain(cfg, "UniChest", **kw) - _in_domain(cfg, "Conquer only", **kw)
    elif key == "unichest_vs_continued":
        m = _in_domain(cfg, "UniChest", **kw) - _in_domain(cfg, "Conquer continued", **kw)
    elif key == "experts_vs_k1":
        m = _in_domain(cfg, "UniChest", **kw) - _in_domain(cfg, "K = 1", **kw)
    elif key == "scl_matters":
        m = _in_domain(cfg, "UniChest", **kw) - _in_domain(cfg, "no L_SCL", **kw)
    elif key == "gate_vs_equal":
        m = _in_domain(cfg, "UniChest", **kw) - _in_domain(cfg, "equal weights", **kw)
    elif key == "reports_vs_labels":
        lab = dict(report_text="labels")
        m = (_in_domain(cfg, "Conquer only", **kw)
             - macro_measure(cfg, "Conquer only", cfg.sources, **lab, **kw))
    elif key == "gain_grows":
        gains = []
        for h in LEVELS:
            c = cfg.replace(heterogeneity=h)
            gains.append(_in_domain(c, "UniChest", **kw) - _in_domain(c, "Conquer continued", **kw))
        m = gains[1] - gains[0]
        m.info["per_level"] = {h: g.summary() for h, g in zip(LEVELS, gains)}
    elif key == "lam_k_robust":
        base = _in_domain(cfg, "UniChest", **kw)
        diffs = {(k, x): _in_domain(cfg, "UniChest", K=k, lam=x, **kw) - base
                 for k, x in _grid_configs(cfg)}
        sums = {kx: d.summary(kind="equivalent", margin=0.01) for kx, d in diffs.items()}
        worst = max(sums, key=lambda kx: abs(sums[kx]["mean"]))
        out = dict(sums[worst])
        out["verdict"] = equivalence_verdict([(s["lo"], s["hi"]) for s in sums.values()], 0.01)
        out["detail"] = f"largest at K = {worst[0]}, lambda = {worst[1]}; {len(sums)} settings"
        out["grid"] = {f"K={k}, lambda={x}": s for (k, x), s in sums.items()}
        out["n_test"] = _split_sizes(cfg, cfg.sources)
        return out
    elif key == "zero_shot_unseen":
        srcs = [s for s in cfg.downstream if s != "chestxdet10" and _has_unseen(cfg, s)]
        m = macro_measure(cfg, "UniChest", srcs, seen=False, **kw)
        m = Measure(m.points - 0.5, m.reps - 0.5, m.info)
    elif key == "gate_routes":
        m = gate_routing(cfg, **kw)
    elif key == "grounding_vs_random":
        m = grounding_vs_random(cfg, **kw)
    elif key == "transfer_vs_random":
        m = transfer_vs_random(cfg, **kw)
    else:
        raise ConfigError(f"unknown claim {key!r}; choose one of {CLAIM_KEYS}")
    claim = next(c for c in CLAIMS if c.key == key)
    out = m.summary(kind=claim.kind, margin=claim.margin)
    out["n_test"] = m.info.get("n_test") or _split_sizes(cfg, m.info.get("sources", []))
    if "classes" in m.info:
        t = m.info["classes"]
        flagged = t[~t["kept"]]
        out["flagged"] = ", ".join(f"{r['source']}:{r['class']} ({r['n_pos']})"
                                   for _, r in flagged.iterrows())
    if "per_level" in m.info:
        out["per_level"] = m.info["per_level"]
    out["detail"] = m.info.get("detail", "")
    return out


def has_classes(cfg: Config, source: str, seen: bool) -> bool:
    """Whether ``source`` has classes that the pre-training sources label (``seen``) or not."""
    from . import labels as L

    known = set(L.union_classes(cfg.sources))
    return any((c in known) == seen for c in L.source_classes(source))


def _has_unseen(cfg: Config, source: str) -> bool:
    return has_classes(cfg, source, seen=False)


def _split_sizes(cfg: Config, sources: Sequence[str], split: str = "test") -> str:
    from .data import make_dataset

    parts = []
    for s in sources:
        ds = make_dataset(cfg, [s], split)
        parts.append(f"{s} {len(ds)} images / {len(set(ds.table.patients))} patients")
    return "; ".join(parts)


# ---- the three claims that are not macro AUCs ------------------------------------------------
def gate_routing(cfg: Config, *, seeds=None, n_boot=None, progress: bool = True) -> Measure:
    """Per seed: a multinomial logistic regression from the gate weights ω (Eq. 5) to the
    source, fitted on the validation splits and scored on the test splits of ``cfg.sources``;
    the effect is its test accuracy minus the majority source's share (chance)."""
    from sklearn.linear_model import LogisticRegression

    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    if cfg.K < 2:
        raise ConfigError("gate_routing needs K >= 2 (K = 1 has no gate)")
    points, reps = np.zeros(len(seeds)), np.zeros((len(seeds), n_boot))
    for i, seed in enumerate(seeds):
        model = load(cfg, "UniChest", seed, progress=progress)
        (xv, yv, _), (xt, yt, pt) = (gate_weights(model, cfg, split) for split in ("valid", "test"))
        clf = LogisticRegression(max_iter=2000).fit(xv, yv)
        hit = (clf.predict(xt) == yt).astype(float)
        chance = np.bincount(yt).max() / len(yt)
        w = _weights(pt, n_boot, f"gate/{cfg.heterogeneity}")
        points[i] = hit.mean() - chance
        reps[i] = (w @ hit) / w.sum(1) - chance
    return Measure(points, reps, dict(what="gate source accuracy - chance",
                                      sources=list(cfg.sources), seeds=list(seeds)))


def gate_weights(model, cfg: Config, split: str):
    """(ω (n, K-1), source index (n,), patients (n,)) of ``cfg.sources``' ``split``."""
    import torch

    from . import hardware
    from .data import make_dataset, make_loader

    ds = make_dataset(cfg, cfg.sources, split)
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode(), hardware.autocast(cfg.amp, device):
        for batch in make_loader(ds, cfg, train=False):
            out.append(model(batch["image"].to(device))["gate"].float().cpu())
    return torch.cat(out).numpy(), ds.table.source_ids, np.asarray(ds.table.patients)


def grounding_vs_random(cfg: Config, *, source: str = "chestxdet10", seeds=None, n_boot=None,
                        progress: bool = True) -> Measure:
    """Pointing-game hits of UniChest minus the hit rate of a uniformly random peak (the
    lesion's area fraction), per instance, averaged over instances; resampled by patient."""
    from . import evaluate

    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    points, reps = np.zeros(len(seeds)), np.zeros((len(seeds), n_boot))
    n = 0
    for i, seed in enumerate(seeds):
        model = load(cfg, "UniChest", seed, progress=progress)
        inst = evaluate.grounding_instances(model, variant_config(cfg, "UniChest", seed), source)
        d = inst["hit"].to_numpy(float) - inst["area"].to_numpy(float)
        w = _weights(inst["patient"].to_numpy(), n_boot, f"ground/{source}")
        points[i] = d.mean()
        reps[i] = (w @ d) / w.sum(1)
        n = len(inst)
    return Measure(points, reps, dict(what="pointing game - random peak", sources=[source],
                                      seeds=list(seeds), n_test=f"{source}: {n} lesion instances"))


def transfer_vs_random(cfg: Config, *, source: str = "siim", seeds=None, n_boot=None,
                       progress: bool = True) -> Measure:
    """Linear probe (all of ``source``'s training split) on the frozen Ī of UniChest's image
    encoder minus the same probe on a randomly initialised encoder of the same architecture;
    macro AUC over kept classes of the test split, paired resamples by patient."""
    from . import finetune
    from .data import make_dataset
    from .model import UniChest

    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    tr, te = make_dataset(cfg, [source], "train"), make_dataset(cfg, [source], "test")
    points, reps = np.zeros(len(seeds)), np.zeros((len(seeds), n_boot))
    for i, seed in enumerate(seeds):
        c = variant_config(cfg, "UniChest", seed)
        pre = load(cfg, "UniChest", seed, progress=progress)
        rnd = UniChest(c, pre.classes).eval()
        s = {}
        for name, m in (("pre", pre), ("random", rnd)):
            scores = finetune.probe_scores(m, c, tr, te)
            s[name] = Scored(scores, np.nan_to_num(te.table.labels, nan=0.0), te.table.mask,
                             np.asarray(te.table.patients), tuple(te.classes),
                             tuple(True for _ in te.classes))
        cols, table = kept_columns(s["pre"], min_pos=MIN_POS[cfg.profile])
        w = _weights(s["pre"].patients, n_boot, f"transfer/{source}")
        diff = (np.nanmean(class_auc_replicates(s["pre"], w, cols), 1)
                - np.nanmean(class_auc_replicates(s["random"], w, cols), 1))
        points[i], reps[i] = diff[0], diff[1:]
    return Measure(points, reps, dict(what="linear probe: pre-trained - random init",
                                      sources=[source], seeds=list(seeds),
                                      classes=table.assign(source=source)))


# ---- the ledger -----------------------------------------------------------------------------
def _cache_file(cfg: Config, key: str, seeds) -> pathlib.Path:
    d = cfg.to_dict()
    up = {f: d[f] for f in store.conquer_fields() if f != "seed"}
    blob = _digest({"claim": key, "config": up, "divide": {f: d[f] for f in store.DIVIDE_ONLY},
                    "seeds": list(seeds), "n_boot": N_BOOT[cfg.profile], "version": VERSION})
    return pathlib.Path(cfg.cache_dir) / "evidence" / f"{key}-{blob[:16]}.json"


#: Bump when a measurement's definition changes (invalidates the cached claim rows).
VERSION = 1


def measure(cfg: Config, keys: Sequence[str] | None = None, *, full: bool | None = None,
            progress: bool = True) -> pd.DataFrame:
    """The claims ledger rows of ``keys`` (default: every claim), measured or read back
    from the cache. Columns: claim, chapter, text, effect, paper, mean, lo, hi, mde,
    n_seeds, per_seed, n_test, flagged, verdict, detail. With ``full`` False (default: the
    profile's :data:`FULL`) the :data:`EXPENSIVE` claims are measured only when their
    result is already cached; otherwise their verdict is :data:`NOT_RUN`."""
    keys = CLAIM_KEYS if keys is None else tuple(keys)
    full = FULL[cfg.profile] if full is None else bool(full)
    seeds = SEEDS[cfg.profile]
    rows = []
    for key in keys:
        claim = next((c for c in CLAIMS if c.key == key), None)
        if claim is None:
            raise ConfigError(f"unknown claim {key!r}; choose one of {CLAIM_KEYS}")
        file = _cache_file(cfg, key, seeds)
        res = None
        if not full and key in EXPENSIVE and not file.is_file():
            nan = float("nan")
            res = dict(mean=nan, lo=nan, hi=nan, mde=nan, n_seeds=len(seeds), per_seed=[],
                       n_test="", flagged="", verdict=NOT_RUN,
                       detail="needs extra Conquer runs per seed; run chapter 05 or 06 with "
                              "-p full_ledger True")
        elif file.is_file():
            try:
                res = json.loads(file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                res = None
        if res is None:
            res = _measure_claim(cfg, key, progress)
            from .data import atomic_write_text
            file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(file, json.dumps(res, default=_json_default))
        rows.append(dict(claim=claim.text, key=key, chapter=claim.chapter, effect=claim.effect,
                         paper=claim.paper, **{k: res.get(k) for k in (
                             "mean", "lo", "hi", "mde", "n_seeds", "per_seed", "n_test",
                             "flagged", "verdict", "detail", "grid", "per_level")}))
    return pd.DataFrame(rows)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, pd.DataFrame):
        return o.to_dict(orient="list")
    raise TypeError(f"cannot store {type(o).__name__} in the evidence cache")


def chapter_claims(cfg: Config, chapter: str, *, full: bool | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """The ledger rows of one chapter's claims (``chapter`` = "02" ... "05")."""
    return measure(cfg, [c.key for c in CLAIMS if c.chapter == chapter], full=full,
                   progress=progress)


def grid_table(cfg: Config, *, progress: bool = True) -> pd.DataFrame:
    """Mean in-domain test aAUC of UniChest for every (K, λ) of :data:`GRID` (the default
    setting included) over the profile's seeds: columns K, lam, mean, lo, hi, n_seeds."""
    Ks, lams = GRID[cfg.profile]
    rows = []
    for k in Ks:
        for x in lams:
            extra = {} if (k == cfg.K and x == cfg.lam) else dict(K=k, lam=x)
            summ = _in_domain(cfg, "UniChest", progress=progress, **extra).summary()
            rows.append(dict(K=k, lam=x, mean=summ["mean"], lo=summ["lo"], hi=summ["hi"],
                             n_seeds=summ["n_seeds"]))
    return pd.DataFrame(rows)


def fmt_interval(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    """``+0.012 [-0.004, +0.028]``."""
    if mean is None or not np.isfinite(mean):
        return "n/a"
    return f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def ledger_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The ledger as the book shows it: one row per claim, readable columns."""
    return pd.DataFrame({
        "chapter": rows["chapter"], "claim": rows["claim"], "paper": rows["paper"],
        "ours (mean [95 % CI])": [fmt_interval(m, lo, hi) for m, lo, hi in
                                 zip(rows["mean"], rows["lo"], rows["hi"])],
        "smallest detectable": [f"{v:.3f}" if v is not None and np.isfinite(v) else "n/a"
                                for v in rows["mde"]],
        "seeds": rows["n_seeds"], "verdict": rows["verdict"],
    }).set_index("claim")


def verdict_lines(rows: pd.DataFrame) -> str:
    """Markdown bullets, one per claim: its verdict, our number and interval, and seeds."""
    out = []
    for _, r in rows.iterrows():
        if r["verdict"] == NOT_RUN:
            out.append(f"* **{NOT_RUN}** — {r['claim']} ({r['detail']}).")
            continue
        out.append(f"* **{r['verdict']}** — {r['claim']}: "
                   f"{fmt_interval(r['mean'], r['lo'], r['hi'])} "
                   f"({r['effect']}; {r['n_seeds']} seeds; smallest detectable effect "
                   f"{r['mde']:.3f}).")
    return "\n".join(out)


__all__ = ["ALPHA", "CLAIMS", "CLAIM_KEYS", "Claim", "EXPENSIVE", "FULL", "GRID", "LEVELS",
           "MIN_POS", "Measure", "NOT_RUN", "N_BOOT", "SEEDS", "Scored", "VARIANTS", "Variant", "chapter_claims",
           "checkpoint", "class_auc_replicates", "equivalence_verdict", "fmt_interval",
           "gate_routing", "gate_weights", "grid_table", "grounding_by_class", "has_classes", "grounding_vs_random", "metric_table", "kept_columns", "ledger_table",
           "load", "macro_measure", "measure", "scored", "transfer_vs_random",
           "variant_config", "variant_table", "verdict_lines", "with_intervals"]

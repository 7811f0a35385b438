"""Transfer with its baselines (paper Table II, issues #15 and #32): linear probe and
fine-tuning on 1 %, 10 % and 100 % of a downstream training split, for UniChest's image
encoder, the Conquer encoder and the same architecture left at its random initialisation.

Every training seed of the profile transfers each encoder with each protocol and portion
(:mod:`unichest_lib.evaluation.finetune`). A portion below 100 % is drawn :data:`SUBSETS`
times per seed (stratified label subsets; subset ``j`` of seed ``s`` drawn with ``(s, j)``,
the same for every encoder); a seed's score is the mean over its subsets, so their spread
enters the seed-to-seed spread of the interval (subsets nested in seeds). Test macro AUCs are
resampled with **one set of patient weights**, so every row is paired with every other; a
row's 95 % interval covers the training seed, the label subsets and the test patients.

**What the linear probe reads** (:data:`FEATURE`): the backbone's own globally pooled
feature (512-d for ResNet-18, the input of the encoder's 1x1 projection), as MGCA's protocol
reads its ResNet's pooled feature; transfer/1 read Ī, the mean of the *projected* patches, a
linear map of it (trained towards the pre-training classes' text queries, or random for
random init), so a probe on Ī can only lose what the map drops. Its C is chosen on each
subset's training rows alone, by an inner patient-disjoint split
(:func:`.finetune.choose_c`). Fine-tuning trains the whole encoder with a head on Ī.
``bench/diag_transfer.py`` measured why the pre-trained probe fails with few labels; the
``kind == "geometry"`` rows of :func:`transfer_table` carry the measurement into chapter 04
(:func:`feature_geometry`), and ``below_half`` counts the probes that rank the test images the
wrong way.

The random encoder is UniChest's own draw at that seed (no ImageNet weights). Divide trains
on the frozen encoder, so UniChest's image encoder *is* its Conquer encoder: one cache entry,
identical rows. The downstream split is the profile's world (``n_downstream`` images; a
larger one is another world, with other test patients). Predictions are cached
(``<cache_dir>/evidence/transfer/*.npz``, plain arrays) by encoder checkpoint sha256 (or
random seed), protocol, portion, subset, feature, epochs and data.

Introduced in ``notebooks/04_evaluate.ipynb``.
"""

from __future__ import annotations

import json
import pathlib
import warnings
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..config import Config, ConfigError
from ..data import make_dataset
from ..evaluation import finetune, stats
from ..fileio import atomic_write, digest
from ..model.encoders import ImageEncoder
from ..model.inference import pooled_features
from ..training import checkpoints, keys
from . import replay
from .measures import MIN_POS, N_BOOT, Measure, class_auc_replicates, kept_columns, patient_weights
from .predictions import _WORLD_FIELDS, Scored
from .variants import SEEDS, VARIANTS, stored, variant_checkpoint, variant_config, variant_model

RANDOM = "random init"
#: The encoders compared: two pre-trained variants and the random control.
ENCODERS = ("UniChest", "Conquer only", RANDOM)
PROTOCOLS = ("linear probe", "fine-tune")
#: Bump when the transfer protocols change (old cached predictions are then recomputed, and
#: the recorded table gets another name: :data:`STUDY`). 2 = the probe reads the backbone's
#: pooled feature, C chosen by an inner split, :data:`SUBSETS` label subsets per seed.
VERSION = "transfer/2"
#: The recorded study's name: a record of an older protocol is never shown as this one's.
STUDY = VERSION.replace("/", "-v")
#: What the linear probe reads (one of :data:`.finetune.FEATURES`).
FEATURE = "backbone"
#: Label subsets per training seed for each portion below 100 %, per profile.
SUBSETS = {"smoke": 2, "tutorial": 5, "paper": 5}
#: The geometry rows of :func:`transfer_table` (``setting`` of ``kind == "geometry"``).
GEOMETRY = ("participation ratio", "top direction's share", "Ī in the class queries' span")
COLUMNS = ("encoder", "protocol", "portion", "setting", "kind", "n_train", "mean", "lo", "hi",
           "n_seeds", "n_subsets", "per_seed", "subset_sd", "below_half", "C", "verdict")


class _EncoderOnly(nn.Module):
    """Holds an image encoder where the transfer code reads it (``.image_encoder``)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.image_encoder = encoder


def random_encoder(cfg: Config, seed: int) -> nn.Module:
    """A model holding only ``cfg``'s image encoder at its random initialisation for
    ``seed`` (UniChest's own draw at that seed, without ImageNet weights), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = ImageEncoder(cfg.backbone, cfg.embed_dim, pretrained=False,
                           channels_last=cfg.channels_last, output_stride=cfg.output_stride)
    return _EncoderOnly(enc).eval()


def _encoder_key(cfg: Config, encoder: str, seed: int, progress: bool):
    """(cache identity of the image encoder, a loader of the model holding it)."""
    if encoder == RANDOM:
        arch = keys.keyed(cfg, ("backbone", "embed_dim", "output_stride"))
        return {"random": seed, **arch}, lambda: random_encoder(cfg, seed)
    meta = checkpoints.read_meta(variant_checkpoint(cfg, encoder, seed, progress=progress))
    sha = meta["sha256"]
    if VARIANTS[encoder].stage == "divide":  # Divide never trains the encoder: its Conquer's
        sha = meta["extra"].get("run_key", "").rsplit(":", 1)[-1] or sha
    return {"sha": sha}, lambda: variant_model(cfg, encoder, seed, progress=progress)


def _file(c: Config, ident: dict, what: dict, epochs: int, source: str, ext: str = "npz"):
    d = c.to_dict()
    train = ({"epochs": epochs, **{f: d[f] for f in ("lr", "weight_decay", "batch_size")}}
             if what.get("protocol") == "fine-tune" else {})
    key = digest({"what": VERSION, "encoder": ident, **what, "seed": c.seed, "source": source,
                  "amp": c.amp, "train": train, "world": {f: d[f] for f in _WORLD_FIELDS},
                  **keys.world_version(c)})
    return pathlib.Path(c.cache_dir) / "evidence" / "transfer" / f"{key[:24]}.{ext}"


class Fit(NamedTuple):
    """One run's test probabilities (n, c) and the probe's C per class (else NaN)."""

    probs: np.ndarray
    C: np.ndarray


def _read(file: pathlib.Path, shape) -> Fit | None:
    try:
        with np.load(file, allow_pickle=False) as z:
            fit = Fit(z["probs"], z["C"])
    except (OSError, ValueError, KeyError):  # missing or damaged: (re)compute it
        return None
    return fit if fit.probs.shape == shape and fit.C.shape == shape[1:] else None


def _check(encoder, protocols, portions, epochs, feature) -> None:
    bad = [p for p in protocols if p not in PROTOCOLS]
    problems = [(bool(bad), f"unknown protocol(s) {bad}; choose from {PROTOCOLS}"),
                (epochs < 1, f"epochs = {epochs!r} must be >= 1"),
                (not all(0.0 < float(p) <= 1.0 for p in portions),
                 f"portions = {list(portions)!r} must lie in (0, 1]; e.g. 0.01 for 1 %"),
                (encoder != RANDOM and encoder not in VARIANTS,
                 f"unknown encoder {encoder!r}; choose {RANDOM!r} or one of {list(VARIANTS)}"),
                (feature not in finetune.FEATURES,
                 f"feature = {feature!r}; choose one of {finetune.FEATURES}")]
    for bad_value, message in problems:
        if bad_value:
            raise ConfigError(message)


def n_subsets(cfg: Config, portion: float, subsets: int | None = None) -> int:
    """Label subsets per seed at ``portion``: one at 100 %, else ``subsets`` (or SUBSETS)."""
    return 1 if float(portion) >= 1.0 else int(subsets or SUBSETS[cfg.profile])


def transfer_predictions(cfg: Config, encoder: str, seed: int, *, source: str = "siim",
                         protocols: Sequence[str] = PROTOCOLS,
                         portions: Sequence[float] = finetune.PORTIONS, epochs: int = 2,
                         subsets: int | None = None, feature: str = FEATURE,
                         progress: bool = True) -> dict[tuple[str, float], list[Fit]]:
    """{(protocol, portion): one :class:`Fit` per label subset} of ``encoder`` (a variant
    name or ``"random init"``) at ``seed`` on ``source``, each read from the cache or
    computed and cached. Subset ``j`` of a portion is drawn with ``(seed, j)``."""
    _check(encoder, protocols, portions, epochs, feature)
    c = cfg.replace(seed=seed) if encoder == RANDOM else variant_config(cfg, encoder, seed)
    ident, get_model = _encoder_key(cfg, encoder, seed, progress)
    tr, te = make_dataset(c, [source], "train"), make_dataset(c, [source], "test")
    y_tr, m_tr = np.nan_to_num(tr.table.labels, nan=0.0), tr.table.mask
    groups = np.asarray(tr.table.patients)
    shape = (len(te), len(te.classes))
    model, feats, out = None, None, {}
    for protocol in protocols:
        for p in map(float, portions):
            out[protocol, p] = []
            for j in range(n_subsets(cfg, p, subsets)):
                what = dict(protocol=protocol, portion=p, subset=j,
                            feature=feature if protocol == "linear probe" else "")
                file = _file(c, ident, what, epochs, source)
                fit = _read(file, shape)
                if fit is None:
                    model = get_model() if model is None else model
                    idx = finetune.stratified_subset(tr.table.labels, p, (seed, j))
                    chosen: dict = {}
                    if protocol == "linear probe":
                        if feats is None:  # encode both splits once for every portion
                            feats = [finetune.probe_features(model, ds, c, feature)
                                     for ds in (tr, te)]
                        probs = finetune.logistic_scores(feats[0][idx], y_tr[idx], m_tr[idx],
                                                         feats[1], seed, groups=groups[idx],
                                                         chosen=chosen)
                    else:
                        probs = finetune.fine_tune_scores(model, c, tr, te, idx, epochs=epochs)
                    cs = np.array([chosen.get(k, np.nan) for k in range(shape[1])], float)
                    fit = Fit(probs, cs)
                    atomic_write(file, lambda f, a=fit: np.savez(f, probs=a.probs, C=a.C))
                out[protocol, p].append(fit)
    return out


def _macro(auc: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without positives
        return np.nanmean(auc, axis=1)


def transfer_measures(cfg: Config, *, source: str = "siim",
                      encoders: Sequence[str] = ENCODERS, protocols: Sequence[str] = PROTOCOLS,
                      portions: Sequence[float] = finetune.PORTIONS, epochs: int = 2, seeds=None,
                      n_boot=None, subsets: int | None = None, feature: str = FEATURE,
                      progress: bool = True) -> tuple[dict, dict]:
    """{(encoder, protocol, portion): :class:`.measures.Measure` of the test macro AUC}
    over the seeds (a seed: the mean over its subsets), on one set of patient resamples, and
    what they were computed on: ``n_train``, ``classes``, seeds, n_boot, and per key each
    subset's AUC (``per_subset``, (n_seeds, n_subsets)) and the probe's chosen C (``C``)."""
    seeds = tuple(SEEDS[cfg.profile] if seeds is None else seeds)
    n_boot = N_BOOT[cfg.profile] if n_boot is None else n_boot
    tr, te = make_dataset(cfg, [source], "train"), make_dataset(cfg, [source], "test")
    t = te.table
    common = dict(labels=np.nan_to_num(t.labels, nan=0.0), mask=t.mask,
                  patients=np.asarray(t.patients), classes=tuple(te.classes),
                  seen=(True,) * len(te.classes))
    w = patient_weights(common["patients"], n_boot, f"transfer/{source}")
    cols, table = kept_columns(Scored(probs=np.zeros(t.labels.shape), **common),
                               min_pos=MIN_POS[cfg.profile])
    grid = [(e, pr, float(p)) for e in encoders for pr in protocols for p in portions]
    per = {g: np.full((len(seeds), n_subsets(cfg, g[2], subsets)), np.nan) for g in grid}
    reps = {g: np.full((len(seeds), n_boot), np.nan) for g in grid}
    chosen = {g: [] for g in grid}
    for i, seed in enumerate(seeds):
        for enc in encoders:
            preds = transfer_predictions(cfg, enc, seed, source=source, protocols=protocols,
                                         portions=portions, epochs=epochs, subsets=subsets,
                                         feature=feature, progress=progress)
            for (protocol, p), fits in preds.items():
                g = (enc, protocol, p)
                chosen[g] += [v for f in fits for v in f.C]
                if not cols:  # nothing measurable: NaN
                    continue
                macro = np.stack([_macro(class_auc_replicates(Scored(probs=f.probs, **common),
                                                              w, cols)) for f in fits])
                per[g][i], reps[g][i] = macro[:, 0], macro[:, 1:].mean(0)
    out = {g: Measure(per[g].mean(1), reps[g], dict(
        what=f"{g[0]}: {g[1]}, {g[2] * 100:g} %", sources=[source], seeds=list(seeds)))
        for g in grid}
    n_train = {float(p): len(finetune.stratified_subset(tr.table.labels, p, (seeds[0], 0)))
               for p in portions}
    return out, dict(n_train=n_train, classes=table.assign(source=source), seeds=list(seeds),
                     n_boot=n_boot, source=source, per_subset=per, C=chosen, feature=feature,
                     n_subsets={float(p): n_subsets(cfg, p, subsets) for p in portions})


def feature_geometry(cfg: Config, encoder: str, seed: int, *, source: str = "siim",
                     feature: str = FEATURE, progress: bool = True) -> dict[str, float]:
    """{:data:`GEOMETRY` name: value} of ``encoder``'s frozen features on ``source``'s train
    and test images (:func:`.finetune.feature_geometry`, cached as JSON): of the probe's
    ``feature``, and Ī's share in the span of the class queries of the "Conquer only" model
    of ``seed`` (the same span for every encoder: random init is the control)."""
    c = cfg.replace(seed=seed) if encoder == RANDOM else variant_config(cfg, encoder, seed)
    ident, get_model = _encoder_key(cfg, encoder, seed, progress)
    text_ident, _ = _encoder_key(cfg, "Conquer only", seed, progress)
    file = _file(c, ident, dict(geometry=list(GEOMETRY), feature=feature, text=text_ident),
                 1, source, ext="json")
    if file.is_file():
        try:
            return json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # a damaged cache file: recompute it
    model, pre = get_model(), variant_model(cfg, "Conquer only", seed, progress=progress)
    ds = [make_dataset(c, [source], s) for s in ("train", "test")]
    with torch.no_grad():
        q = pre.encode_text(list(pre.classes)).float().cpu().numpy()
    geo = finetune.feature_geometry(
        np.concatenate([finetune.probe_features(model, d, c, feature) for d in ds]),
        np.concatenate([pooled_features(model, d, c) for d in ds]), q)
    out = dict(zip(GEOMETRY, (geo["participation_ratio"], geo["top_share"], geo["span_share"])))
    atomic_write(file, json.dumps(out))
    return out


def _transfer_stored(cfg: Config, **kw) -> bool:
    return stored(cfg, ["Conquer only"] + [e for e in kw.get("encoders", ENCODERS) if e != RANDOM],
                  kw.get("seeds"))


@replay.recorded_table(STUDY, _transfer_stored)
def transfer_table(cfg: Config, *, source: str = "siim", encoders: Sequence[str] = ENCODERS,
                   protocols: Sequence[str] = PROTOCOLS,
                   portions: Sequence[float] = finetune.PORTIONS, epochs: int = 2, seeds=None,
                   n_boot=None, subsets: int | None = None, feature: str = FEATURE,
                   progress: bool = True) -> pd.DataFrame:
    """Test macro AUC per encoder, protocol and portion (``kind == "score"``; the subsets'
    sd within a seed ``subset_sd``, the share of subsets below AUC 0.5 ``below_half``, the
    probe's median C), each pre-trained encoder − random init and UniChest − Conquer only
    (``"difference"``, paired, verdict of "the first is better"), and each encoder's
    :func:`feature_geometry` (``"geometry"``, t-interval over seeds). Mean over seeds, 95 %
    interval over seeds, subsets and test patients (clipped to [0, 1], or [-1, 1])."""
    ms, info = transfer_measures(cfg, source=source, encoders=encoders, protocols=protocols,
                                 portions=portions, epochs=epochs, seeds=seeds, n_boot=n_boot,
                                 subsets=subsets, feature=feature, progress=progress)
    pairs = [(e, RANDOM) for e in encoders if e != RANDOM and RANDOM in encoders]
    pairs += [("UniChest", "Conquer only")] if {"UniChest", "Conquer only"} <= set(encoders) else []
    rows = []
    for protocol in protocols:
        for p in map(float, portions):
            for enc in encoders:
                rows.append(_row(ms[enc, protocol, p], enc, protocol, p, "score", info))
            for a, b in pairs:
                rows.append(_row(ms[a, protocol, p] - ms[b, protocol, p], f"{a} − {b}",
                                 protocol, p, "difference", info))
    for enc in encoders if "linear probe" in protocols else ():
        geo = [feature_geometry(cfg, enc, s, source=source, feature=feature, progress=progress)
               for s in info["seeds"]]
        for name in GEOMETRY:
            v = np.array([g[name] for g in geo])
            si = stats.seed_interval(v)
            rows.append(dict(encoder=enc, protocol="linear probe", portion=1.0, setting=name,
                             kind="geometry", n_train=info["n_train"].get(1.0, np.nan),
                             mean=si["mean"], lo=si["lo"], hi=si["hi"], n_seeds=len(v),
                             n_subsets=1, per_seed=", ".join(f"{x:.3f}" for x in v), verdict=""))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _row(m: Measure, encoder: str, protocol: str, portion: float, kind: str, info: dict):
    s = m.summary()
    low = 0.0 if kind == "score" else -1.0  # a normal interval may spill over the range
    g = (encoder, protocol, portion)
    per = info["per_subset"].get(g)
    spread = below = np.nan
    if per is not None and np.isfinite(per).any():
        below = float(np.mean(per[np.isfinite(per)] < 0.5))
        if per.shape[1] > 1:  # the sd of one seed's subsets, averaged over seeds
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                spread = float(np.nanmean(np.nanstd(per, axis=1, ddof=1)))
    cs = np.asarray(info["C"].get(g, []), float)
    cs = cs[np.isfinite(cs)]
    return dict(encoder=encoder, protocol=protocol, portion=portion,
                setting=f"{protocol}, {portion * 100:g} %", kind=kind,
                n_train=info["n_train"][portion], mean=s["mean"], lo=max(s["lo"], low),
                hi=min(s["hi"], 1.0), n_seeds=s["n_seeds"],
                n_subsets=info["n_subsets"][portion],
                per_seed=", ".join(f"{v:.3f}" for v in m.points),
                subset_sd=spread, below_half=below,
                C=float(np.quantile(cs, 0.5, method="lower")) if len(cs) else np.nan,
                verdict=s["verdict"] if kind == "difference" else "")


__all__ = ["COLUMNS", "ENCODERS", "FEATURE", "Fit", "GEOMETRY", "PROTOCOLS", "RANDOM",
           "STUDY", "SUBSETS", "VERSION", "feature_geometry", "n_subsets", "random_encoder",
           "transfer_measures", "transfer_predictions", "transfer_table"]

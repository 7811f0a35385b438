"""The claims of the paper the book tests, and how each is measured.

:data:`CLAIMS` lists them, each with the chapter that shows it, the paper's number and the
effect that is measured; :func:`measure_claim` measures one over the profile's seeds as the
difference of a variant and its matched control (:mod:`.measures`), or, for the three that are
not macro AUCs, as gate routing accuracy (:func:`gate_routing`), pointing game against the
strongest image-blind baseline of each lesion class (:func:`grounding_vs_baselines`) and
transfer against a random encoder in every protocol and portion (:func:`transfer_vs_random`,
a verdict per setting). :mod:`.ledger` turns the measurements into the claims ledger.

Introduced in ``notebooks/07_claims.ipynb``; chapters 02–05 show their own claims.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ..config import Config, ConfigError
from ..data import make_dataset
from ..evaluation import stats
from ..model.inference import gate_weights
from .measures import (N_BOOT, Measure, has_classes, in_domain_measure, macro_measure,
                       patient_weights, split_sizes)
from . import replay
from .grounding_measures import grounding_baseline_measures, strongest_baseline
from .transfer import PROTOCOLS, RANDOM, transfer_measures
from .variants import GRID, LEVELS, SEEDS, refuse_untrained, variant_config, variant_model


# ---- the claims -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim of the paper the book tests. ``kind``/``margin`` feed
    :func:`unichest_lib.evaluation.stats.verdict`; ``paper`` is the paper's number with its
    source."""

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
    Claim("grounding_vs_baselines", "04",
          "The attention points at lesions better than the strongest image-blind baseline",
          "pointing game - that of the best of random peak, lung-field centre and class mean "
          "mask on each class's test lesions, macro over lesion classes",
          "qualitative (Fig. 7)"),
    Claim("transfer_vs_random", "04", "Pre-training helps transfer",
          "test AUC on the transfer source, UniChest's image encoder minus the same encoder at "
          "random initialisation, for the linear probe and fine-tuning on 1 / 10 / 100 % of the "
          "training split: a verdict per setting (the number shown: linear probe, 100 %)",
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
    Claim("meaning_headroom", "05",
          "Source-dependent label meaning gives experts something to find",
          "headroom (a head told the source - one shared head, on the frozen Conquer "
          "encoder, mean in-domain aAUC) at label meaning 1 minus the same at 0",
          "not testable on real data (P(label | image) differs by source there, with no dial to turn)"),
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


#: The verdict of a claim measured on a stale record: no verdict is drawn from it.
STALE = "stale"


# ---- measuring each claim ---------------------------------------------------------------------
def zero_shot_sources(cfg: Config) -> list[str]:
    """The downstream sources scored by zero-shot on unseen classes: those with classes no
    pre-training source labels (ChestX-Det10 left out: the paper uses it for grounding)."""
    return [s for s in cfg.downstream if s != "chestxdet10" and has_classes(cfg, s, False)]


def _grid_configs(cfg: Config):
    Ks, lams = GRID[cfg.profile]
    return [(k, x) for k in Ks for x in lams if not (k == cfg.K and x == cfg.lam)]


def measure_claim(cfg: Config, key: str, progress: bool = True) -> dict:
    """Measure one claim: a dict with the summary fields, the split sizes, the seeds and
    where its numbers come from (``evidence``: live, fresh or stale; ``caption``). All of a
    claim's scores come from this build's runs or all from the record
    (:func:`.replay.consistent`); a claim measured on a stale record has verdict "stale"."""
    out, ev = replay.consistent(_measure_claim, cfg, key, progress)
    return with_source(out, ev)


def with_source(result: dict, ev) -> dict:
    """A claim's ``result`` with where its numbers come from (``evidence``, ``caption``;
    :class:`.replay.Evidence`, None: said inside); on a stale record the verdict is
    :data:`STALE`."""
    if ev is not None:
        result.update(evidence=ev.status, caption=ev.caption)
        if ev.status == "stale":
            result["verdict"] = STALE
    return result


def _measure_claim(cfg: Config, key: str, progress: bool = True) -> dict:
    kw = dict(progress=progress)

    def vs(control: str, c: Config = cfg) -> Measure:  # UniChest minus a control, in-domain
        return in_domain_measure(c, "UniChest", **kw) - in_domain_measure(c, control, **kw)

    if key == "multi_vs_single":
        src = [cfg.val_source]
        m = (macro_measure(cfg, "Conquer only", src, **kw)
             - macro_measure(cfg, "one source", src, **kw))
    elif key == "unichest_vs_conquer":
        m = vs("Conquer only")
    elif key == "unichest_vs_continued":
        m = vs("Conquer continued")
    elif key == "experts_vs_k1":
        m = vs("K = 1")
    elif key == "scl_matters":
        m = vs("no L_SCL")
    elif key == "gate_vs_equal":
        m = vs("equal weights")
    elif key == "reports_vs_labels":
        lab = dict(report_text="labels")
        m = (in_domain_measure(cfg, "Conquer only", **kw)
             - macro_measure(cfg, "Conquer only", cfg.sources, **lab, **kw))
    elif key == "gain_grows":
        gains = [vs("Conquer continued", cfg.replace(heterogeneity=h)) for h in LEVELS]
        m = gains[1] - gains[0]
        m.info["per_level"] = {h: g.summary() for h, g in zip(LEVELS, gains)}
    elif key == "meaning_headroom":
        from .dials import dial_cell, dial_world
        from .headroom import headroom_measure

        worlds = [dial_world(cfg, "label_meaning", v) for v in LEVELS]
        heads = [headroom_measure(c, c.sources, progress=progress) for c in worlds]
        m = heads[1] - heads[0]
        m.info.update(sources=list(cfg.sources),
                      per_level={v: dial_cell(c, progress=progress)
                                 for v, c in zip(LEVELS, worlds)})
    elif key == "lam_k_robust":
        base = in_domain_measure(cfg, "UniChest", **kw)
        diffs = {(k, x): in_domain_measure(cfg, "UniChest", K=k, lam=x, **kw) - base
                 for k, x in _grid_configs(cfg)}
        sums = {kx: d.summary(kind="equivalent", margin=0.01) for kx, d in diffs.items()}
        worst = max(sums, key=lambda kx: abs(sums[kx]["mean"]))
        out = dict(sums[worst])
        out["verdict"] = equivalence_verdict([(s["lo"], s["hi"]) for s in sums.values()], 0.01)
        out["detail"] = f"largest at K = {worst[0]}, lambda = {worst[1]}; {len(sums)} settings"
        out["grid"] = {f"K={k}, lambda={x}": s for (k, x), s in sums.items()}
        out["n_test"] = split_sizes(cfg, cfg.sources)
        return out
    elif key == "zero_shot_unseen":
        m = macro_measure(cfg, "UniChest", zero_shot_sources(cfg), seen=False, **kw)
        m = Measure(m.points - 0.5, m.reps - 0.5, m.info)
    elif key == "gate_routes":
        m = gate_routing(cfg, **kw)
    elif key == "grounding_vs_baselines":
        m = grounding_vs_baselines(cfg, **kw)
    elif key == "transfer_vs_random":
        return transfer_vs_random(cfg, **kw)
    else:
        raise ConfigError(f"unknown claim {key!r}; choose one of {CLAIM_KEYS}")
    claim = next(c for c in CLAIMS if c.key == key)
    out = m.summary(kind=claim.kind, margin=claim.margin)
    out["n_test"] = m.info.get("n_test") or split_sizes(cfg, m.info.get("sources", []))
    if "classes" in m.info:
        t = m.info["classes"]
        flagged = t[~t["kept"]]
        out["flagged"] = ", ".join(f"{r['source']}:{r['class']} ({r['n_pos']})"
                                   for _, r in flagged.iterrows())
    if "per_level" in m.info:
        out["per_level"] = m.info["per_level"]
    out["detail"] = m.info.get("detail", "")
    return out


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
    refuse_untrained(cfg, "UniChest", seeds)  # before a seed's minute of gate weights
    points, reps = np.zeros(len(seeds)), np.zeros((len(seeds), n_boot))
    for i, seed in enumerate(seeds):
        model = variant_model(cfg, "UniChest", seed, progress=progress)
        (xv, yv, _), (xt, yt, pt) = (source_gates(model, cfg, split) for split in ("valid", "test"))
        clf = LogisticRegression(max_iter=2000).fit(xv, yv)
        hit = (clf.predict(xt) == yt).astype(float)
        chance = np.bincount(yt).max() / len(yt)
        w = patient_weights(pt, n_boot, f"gate/{cfg.heterogeneity}")
        points[i] = hit.mean() - chance
        reps[i] = (w @ hit) / w.sum(1) - chance
    return Measure(points, reps, dict(what="gate source accuracy - chance",
                                      sources=list(cfg.sources), seeds=list(seeds)))


def source_gates(model, cfg: Config, split: str):
    """(ω (n, K-1), source index (n,), patients (n,)) of ``cfg.sources``' ``split``."""
    ds = make_dataset(cfg, cfg.sources, split)
    return gate_weights(model, ds, cfg), ds.table.source_ids, np.asarray(ds.table.patients)


def grounding_vs_baselines(cfg: Config, *, source: str = "chestxdet10", seeds=None,
                           n_boot=None, progress: bool = True) -> Measure:
    """Pointing game of UniChest minus that of its strongest baseline, class by class (the
    baseline with the best mean hit rate on that class's test lesions), macro over the
    classes with enough test lesions, paired by patient: the macro ``UniChest − strongest
    baseline`` row of chapter 04's grounding table
    (:func:`.grounding_measures.strongest_baseline`, the same numbers)."""
    ms, info = grounding_baseline_measures(cfg, source, seeds=seeds, n_boot=n_boot,
                                           progress=progress)
    diffs, best = strongest_baseline(ms, info, "pointing game")
    m = diffs["macro"]
    kept = [c for c in info["classes"] if c not in info["flagged"]]
    return Measure(m.points, m.reps, dict(
        what="pointing game - strongest baseline", sources=[source], seeds=info["seeds"],
        detail="; ".join(f"{c}: {best[c]}" for c in kept),
        n_test=f"{source}: {info['n']['macro']} lesion instances of {len(kept)} classes"))


#: The setting whose number the transfer row shows (its verdict lists every setting's).
TRANSFER_HEADLINE = ("linear probe", 1.0)


def setting_label(protocol: str, portion: float) -> str:
    """``probe 10 %`` / ``fine-tune 100 %``: a transfer setting in a verdict text."""
    return f"{'probe' if protocol == 'linear probe' else protocol} {portion * 100:g} %"


def mixed_verdict(verdicts: dict[str, str]) -> str:
    """One verdict over several settings ({label: verdict}): the common word when they all
    agree, else each word with the settings that gave it (``holds in …; contradicted in
    …``), so a claim that holds in one setting and fails in another says both."""
    words = [v for v in ("holds", "contradicted", "inconclusive") if v in verdicts.values()]
    words += sorted(set(verdicts.values()) - set(words))
    if len(words) == 1:
        return words[0]
    return "; ".join(f"{w} in " + ", ".join(k for k, v in verdicts.items() if v == w)
                     for w in words)


def transfer_vs_random(cfg: Config, *, source: str = "siim", seeds=None, n_boot=None,
                       epochs: int = 2, progress: bool = True) -> dict:
    """UniChest's image encoder minus the same encoder at random initialisation, in every
    protocol and portion of chapter 04's transfer table (:func:`.transfer.transfer_measures`,
    the same cache; macro AUC over kept classes, paired resamples by patient, label subsets
    within seeds): the ledger row of :data:`TRANSFER_HEADLINE` with a :func:`mixed_verdict`
    over all settings, each setting's summary in ``grid``, and in ``detail`` every setting's
    difference and UniChest − Conquer only (zero when Divide leaves the encoder as Conquer
    trained it: one set of weights, no comparison to draw)."""
    ms, info = transfer_measures(cfg, source=source, encoders=("UniChest", "Conquer only", RANDOM),
                                 protocols=PROTOCOLS, seeds=seeds, n_boot=n_boot, epochs=epochs,
                                 progress=progress)
    settings = sorted({(g[1], g[2]) for g in ms}, key=lambda s: (PROTOCOLS.index(s[0]), s[1]))
    sums = {setting_label(*s): (ms["UniChest", *s] - ms[RANDOM, *s]).summary() for s in settings}
    same = max(float(np.nanmax(np.abs((ms["UniChest", *s] - ms["Conquer only", *s]).points)))
               for s in settings)
    out = dict(sums[setting_label(*TRANSFER_HEADLINE)])
    out["verdict"] = mixed_verdict({k: v["verdict"] for k, v in sums.items()})
    out["grid"] = sums
    out["detail"] = ("UniChest − random init: " + "; ".join(
        f"{k} {stats.fmt_interval(v['mean'], v['lo'], v['hi'])}" for k, v in sums.items())
        + f". UniChest − Conquer only: largest |difference| {same:.3f} over every setting and "
        f"seed (Divide trains on the frozen encoder). Probe on the {info['feature']} feature, "
        f"C chosen on training rows; {max(info['n_subsets'].values())} label subsets per seed "
        f"below 100 %; number shown: {setting_label(*TRANSFER_HEADLINE)}")
    out["n_test"] = split_sizes(cfg, [source])
    t = info["classes"]
    out["flagged"] = ", ".join(f"{r['source']}:{r['class']} ({r['n_pos']})"
                               for _, r in t[~t["kept"]].iterrows())
    return out


__all__ = ["CLAIMS", "CLAIM_KEYS", "STALE", "TRANSFER_HEADLINE", "Claim", "equivalence_verdict",
           "gate_routing", "grounding_vs_baselines", "measure_claim", "mixed_verdict",
           "setting_label", "source_gates", "transfer_vs_random", "with_source",
           "zero_shot_sources"]

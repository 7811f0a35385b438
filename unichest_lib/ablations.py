"""Ablations of UniChest (paper Section V) and one question the paper cannot ask.

Each runner returns a tidy :class:`pandas.DataFrame` and caches it on disk (CSV under
``<cache_dir>/ablations``, keyed by every setting that changes it), so a second run of the
chapter reads its tables back in a second:

* :func:`stage_ablation` — Table VI: Conquer on one source, Conquer on every source, and
  Conquer + Divide, scored in-domain on ``val_source`` and zero-shot on a downstream source.
* :func:`lam_k_grid` — Fig. 8: validation aAUC of Divide runs over a grid of (K, λ), all
  starting from ONE shared Conquer checkpoint.
* :func:`report_ablation` — Table VII: Conquer with report entities vs label concatenation
  for every sample (``Config.report_text``).
* :func:`backbone_ablation` — Table VIII (image side): ResNet depths.
* :func:`heterogeneity_gain` — what the paper cannot measure: Divide's gain over Conquer as
  a function of the embedded world's ``heterogeneity`` dial.

**Reduced runs.** Ablations multiply training runs, so they use :func:`ablation_config`: the
chapter's configuration with ``scale`` times the images per source (and optional overrides,
e.g. fewer epochs). Conquer checkpoints come from :mod:`unichest_lib.store` (trained once,
shared by every ablation that needs the same configuration).

**Divide on frozen features.** Every Divide run of the ablations sets
``divide_on_features=True`` (:mod:`unichest_lib.features`): the frozen encoder's patches of
the training split are computed once per Conquer checkpoint and shared by all the Divide
runs that start from it (the λ×K grid trains several). The ablation Divides therefore see
their training images **without** train-time augmentation, unlike chapter 03's Divide, and
the returned model is the last epoch's (the best checkpoint's aAUC is ``best_metric``).
Everything else (losses, optimiser, schedule, validation aAUC) is the library's
:func:`unichest_lib.train.divide`.

Introduced in ``notebooks/05_ablations.ipynb``.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import tempfile
from typing import Callable, Sequence

import pandas as pd

from . import checkpoints, evaluate, features, metrics, store, train
from .config import Config, ConfigError
from .data import make_dataset

#: Default fraction of ``n_per_source`` / ``n_downstream`` used by ablation runs, per profile.
DEFAULT_SCALE = {"smoke": 1.0, "tutorial": 1.0, "paper": 0.1}
#: Per profile: the ablation grids the chapter runs when its parameters are left at None.
#: ``overrides`` shorten the ablation runs further (documented in the chapter).
DEFAULTS = {
    # smoke trains no Conquer beyond the ones the other ablations need (CI time)
    "smoke": dict(Ks=(1, 2), lams=(0.5,), backbones=("resnet18",), levels=(1.0,),
                  overrides={}),
    # tutorial: the chapter's own world and schedule (scale 1.0, no overrides), so the
    # multi-source Conquer run is chapter 02's checkpoint from the store; each other backbone
    # and heterogeneity level adds one Conquer run, and the Divide runs share stored features
    "tutorial": dict(Ks=(1, 2, 4), lams=(0.25, 0.75), backbones=(),
                     levels=(0.0, 0.25, 0.5, 1.0), overrides={}),
    "paper": dict(Ks=(3, 4, 5), lams=(0.3, 0.5, 0.7), backbones=("resnet50", "resnet101"),
                  levels=(0.0, 0.5, 1.0), overrides={}),
}
#: Least images per source an ablation run keeps (splits and batches need a few).
MIN_IMAGES = 48
METRICS = ("aAUC", "aF1", "aACC", "mAP")


# ---- configurations ------------------------------------------------------------------
def ablation_config(cfg: Config, scale: float | None = None, **overrides) -> Config:
    """``cfg`` reduced for ablation runs: ``scale`` × images per source (at least
    :data:`MIN_IMAGES`), then ``overrides`` by name (validated like any Config)."""
    if scale is None:
        scale = DEFAULT_SCALE[cfg.profile]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise ConfigError(f"parameter 'scale' = {scale!r} must be a number in (0, 1] "
                          "(the fraction of images per source the ablation runs use)")
    n = max(MIN_IMAGES, round(cfg.n_per_source * scale))
    n_down = max(MIN_IMAGES, round(cfg.n_downstream * scale))
    return cfg.replace(n_per_source=min(n, cfg.n_per_source) if cfg.n_per_source >= MIN_IMAGES
                       else cfg.n_per_source,
                       n_downstream=min(n_down, cfg.n_downstream) if cfg.n_downstream >= MIN_IMAGES
                       else cfg.n_downstream, **overrides)


def _table_path(cfg: Config, name: str, params: dict) -> pathlib.Path:
    blob = json.dumps({"name": name, "conquer": store.conquer_key(cfg),
                       "divide": store.divide_key(cfg), "params": params}, sort_keys=True,
                      default=str)
    h = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return pathlib.Path(cfg.cache_dir) / "ablations" / f"{name}-{h}.csv"


def cached_table(cfg: Config, name: str, params: dict, build: Callable[[], pd.DataFrame]
                 ) -> pd.DataFrame:
    """``build()`` once per (cfg, name, params); later calls read the CSV back."""
    path = _table_path(cfg, name, params)
    if path.is_file():
        return pd.read_csv(path)
    df = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        df.to_csv(f, index=False)
    pathlib.Path(f.name).replace(path)
    return df


class Workbench:
    """Shared state of one chapter's ablations: Conquer models, the frozen training features
    of each Conquer checkpoint (:mod:`unichest_lib.features`), Divide runs, and pooled text
    features (keyed by the text backbone they come from)."""

    def __init__(self, progress: bool = True):
        self.progress = progress
        self._models: dict[str, object] = {}
        self._features: dict[str, object] = {}
        self._divides: dict[str, object] = {}
        self._text: dict[str, dict] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="unichest-ablation-")

    def conquer(self, cfg: Config):
        """The best Conquer model of ``cfg`` from the store (trained on first use)."""
        k = store.conquer_key(cfg)
        if k not in self._models:
            path = store.conquer_checkpoint(cfg, progress=self.progress)
            # a shared Conquer checkpoint may have been written by a run with another K
            # (K is Divide-only, outside the Conquer key): load it with its own Divide fields
            saved = checkpoints.read_meta(path)["config"]
            load_cfg = cfg.replace(**{f: saved[f] for f in store.DIVIDE_ONLY if f in saved})
            self._models[k] = checkpoints.load(path, load_cfg).eval()
        return self._models[k]

    def features(self, cfg: Config):
        """The frozen encoder's patches of ``cfg``'s training split (once per Conquer key)."""
        k = store.conquer_key(cfg)
        if k not in self._features:
            self._features[k] = features.encode(
                self.conquer(cfg), make_dataset(cfg, cfg.sources, "train"), cfg)
        return self._features[k]

    def text_cache(self, cfg: Config) -> dict:
        """Pooled text features: a frozen pretrained backbone is the same for every run;
        one trained in Conquer (``freeze_text=False``) differs per Conquer checkpoint."""
        k = cfg.text_model if cfg.freeze_text else store.conquer_key(cfg)
        return self._text.setdefault(k, {})

    def divide(self, cfg: Config):
        """TrainResult of Divide for ``cfg`` (once per Divide key), trained on the frozen
        features (``divide_on_features=True``); its ``model`` is the last epoch's."""
        cfg = cfg.replace(divide_on_features=True)
        k = store.divide_key(cfg)
        if k not in self._divides:
            self._divides[k] = train.divide(
                cfg, conquer_checkpoint=store.conquer_checkpoint(cfg, progress=self.progress),
                out_dir=pathlib.Path(self._tmp.name) / k[:16], progress=self.progress,
                features=self.features(cfg), text_cache=self.text_cache(cfg))
            self._divides[k].model.eval()
        return self._divides[k]


# ---- scoring ---------------------------------------------------------------------------
def macro_scores(model, cfg: Config, *, in_domain: Sequence[str] = (),
                 zero_shot: Sequence[str] = ()) -> pd.DataFrame:
    """Macro metrics (aAUC, aF1, aACC, mAP) of ``model`` on the test split: one row per
    (source, task, metric)."""
    frames = []
    if in_domain:
        frames.append(evaluate.in_domain(model, cfg, in_domain).assign(task="in-domain"))
    if zero_shot:
        frames.append(evaluate.zero_shot(model, cfg, zero_shot).assign(task="zero-shot"))
    df = pd.concat(frames, ignore_index=True)
    df = df[(df["class"] == metrics.MACRO) & df["metric"].isin(METRICS)]
    return df[["source", "task", "metric", "value"]].reset_index(drop=True)


def _zero_shot_source(cfg: Config, source: str | None) -> str:
    if source is not None:
        return source
    for s in ("shenzhen", "siim", "openi"):
        if s in cfg.downstream:
            return s
    return next(s for s in cfg.downstream if s != "chestxdet10")


# ---- Table VI -------------------------------------------------------------------------
def stage_ablation(cfg: Config, *, zero_shot_source: str | None = None,
                   bench: Workbench | None = None) -> pd.DataFrame:
    """Table VI: single-source Conquer (on ``val_source``), multi-source Conquer and
    Conquer + Divide; test-split macro metrics in-domain on ``val_source`` and zero-shot on
    ``zero_shot_source`` (default Shenzhen). Columns: setting, source, task, metric, value."""
    zs = _zero_shot_source(cfg, zero_shot_source)

    def build():
        wb = bench or Workbench()
        single = cfg.replace(sources=(cfg.val_source,))
        runs = [(f"Conquer, one source ({cfg.val_source})", single, wb.conquer(single)),
                ("Conquer, all sources", cfg, wb.conquer(cfg)),
                ("Conquer + Divide", cfg, wb.divide(cfg).model)]
        return pd.concat([macro_scores(m, c, in_domain=[cfg.val_source], zero_shot=[zs])
                          .assign(setting=name) for name, c, m in runs], ignore_index=True)

    return cached_table(cfg, "stage", {"zero_shot": zs}, build)


# ---- Fig. 8 ----------------------------------------------------------------------------
def lam_k_grid(cfg: Config, Ks: Sequence[int], lams: Sequence[float], *,
               bench: Workbench | None = None) -> pd.DataFrame:
    """Fig. 8: best validation aAUC (``val_source``) of Divide for every (K, λ), all from
    the same Conquer checkpoint. K = 1 has no experts, so λ does nothing: it is trained
    once and its row repeated. Columns: K, lam, val_aAUC."""
    Ks, lams = [int(k) for k in Ks], [float(x) for x in lams]
    for k in Ks:
        if k < 1:
            raise ConfigError(f"parameter 'Ks' has K = {k}; every K must be an integer >= 1")
    for x in lams:
        if not 0 <= x <= 1:
            raise ConfigError(f"parameter 'lams' has lambda = {x}; every lambda must lie in [0, 1]")

    def build():
        wb = bench or Workbench()
        rows = []
        for k in Ks:
            for x in lams:
                run_cfg = cfg.replace(K=k, lam=lams[0] if k == 1 else x)
                rows.append(dict(K=k, lam=x, val_aAUC=wb.divide(run_cfg).best_metric))
        return pd.DataFrame(rows)

    return cached_table(cfg, "lam_k", {"Ks": Ks, "lams": lams}, build)


# ---- Table VII ---------------------------------------------------------------------------
REPORT_SETTINGS = {"filtered": "report entities (label concat. for the rest)",
                   "labels": "label concat. for all"}


def report_ablation(cfg: Config, *, zero_shot_source: str = "openi",
                    bench: Workbench | None = None) -> pd.DataFrame:
    """Table VII: Conquer with the report sources' texts as filtered report entities (the
    paper) or as label concatenation (``report_text="labels"``); test macro metrics
    in-domain on every pre-training source and zero-shot on ``zero_shot_source``.
    Columns: setting, report_text, source, task, metric, value."""
    def build():
        wb = bench or Workbench()
        frames = []
        for mode, name in REPORT_SETTINGS.items():
            c = cfg.replace(report_text=mode)
            zs = [zero_shot_source] if zero_shot_source in c.downstream else []
            frames.append(macro_scores(wb.conquer(c), c, in_domain=c.sources, zero_shot=zs)
                          .assign(setting=name, report_text=mode))
        return pd.concat(frames, ignore_index=True)

    return cached_table(cfg, "report", {"zero_shot": zero_shot_source}, build)


# ---- Table VIII ----------------------------------------------------------------------------
def backbone_ablation(cfg: Config, backbones: Sequence[str], *,
                      bench: Workbench | None = None) -> pd.DataFrame:
    """Table VIII (image encoder): Conquer and Conquer + Divide per ResNet ``backbones``;
    test macro metrics in-domain on every pre-training source.
    Columns: backbone, stage, source, task, metric, value."""
    from .config import BACKBONES

    bad = [b for b in backbones if b not in BACKBONES]
    if bad or not backbones:
        raise ConfigError(f"parameter 'backbones' = {list(backbones)!r}; choose from {BACKBONES}")

    def build():
        wb = bench or Workbench()
        frames = []
        for b in backbones:
            c = cfg.replace(backbone=b)
            for stage, model in (("Conquer", wb.conquer(c)), ("Conquer + Divide", wb.divide(c).model)):
                frames.append(macro_scores(model, c, in_domain=c.sources)
                              .assign(backbone=b, stage=stage))
        return pd.concat(frames, ignore_index=True)

    return cached_table(cfg, "backbone", {"backbones": list(backbones)}, build)


# ---- beyond the paper ------------------------------------------------------------------------
def heterogeneity_gain(cfg: Config, levels: Sequence[float], *,
                       bench: Workbench | None = None) -> pd.DataFrame:
    """Divide's gain over Conquer as a function of source heterogeneity (embedded world
    only): for each level, mean in-domain test aAUC over the pre-training sources of the
    Conquer model and of Conquer + Divide, and their difference ``gain``.
    Columns: heterogeneity, conquer_aAUC, divide_aAUC, gain."""
    if cfg.data != "embedded":
        raise ConfigError("heterogeneity_gain needs the embedded world (data='embedded'): "
                          "real datasets have no heterogeneity dial")
    levels = [float(h) for h in levels]
    for h in levels:
        if not 0 <= h <= 1:
            raise ConfigError(f"parameter 'heterogeneity_levels' has {h}; levels must lie in [0, 1]")

    def build():
        wb = bench or Workbench()
        rows = []
        for h in levels:
            c = cfg.replace(heterogeneity=h)
            mean = {}
            for stage, model in (("conquer", wb.conquer(c)), ("divide", wb.divide(c).model)):
                s = macro_scores(model, c, in_domain=c.sources)
                mean[stage] = float(s.loc[s["metric"] == "aAUC", "value"].mean())
            rows.append(dict(heterogeneity=h, conquer_aAUC=mean["conquer"],
                             divide_aAUC=mean["divide"], gain=mean["divide"] - mean["conquer"]))
        return pd.DataFrame(rows)

    return cached_table(cfg, "heterogeneity", {"levels": levels}, build)


__all__ = ["DEFAULTS", "DEFAULT_SCALE", "REPORT_SETTINGS", "Workbench", "ablation_config",
           "backbone_ablation", "cached_table", "heterogeneity_gain", "lam_k_grid",
           "macro_scores", "report_ablation", "stage_ablation"]

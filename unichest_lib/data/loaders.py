"""One entry point to the data, whichever world it comes from (paper Section III-A).

Every chapter, the trainer and the evaluation call :func:`make_dataset` and
:func:`make_loader`; they never need to know whether the samples are rendered by the embedded
procedural world (``cfg.data == "embedded"``, :mod:`unichest_lib.data.world`) or read from the
real datasets described by a YAML file (``cfg.data = "path/to/real.yaml"``,
:mod:`unichest_lib.data.real`).

For sources that have free-text reports (MIMIC-CXR, Open-I) the paper's text input ``t`` is
not the report itself but the entities that RadGraph extracts from it, joined by ``[SEP]``
sentence by sentence (Section III-B). :func:`filter_report_texts` applies
:func:`unichest_lib.data.report_filter.report_to_text` to those rows, with a cache on disk.

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import Config, ConfigError
from ..fileio import atomic_write
from .samples import SEP, MultiSourceDataset, labels_to_text

log = logging.getLogger(__name__)

#: Sources whose ``text`` is a free-text report (the rest use label concatenation).
REPORT_SOURCES: tuple[str, ...] = ("mimic", "openi")
SPLITS: tuple[str, ...] = ("train", "valid", "test")


def make_dataset(cfg: Config, sources: Sequence[str], split: str, *,
                 with_masks: bool = False) -> MultiSourceDataset:
    """The ``split`` of the union of ``sources`` as one :class:`MultiSourceDataset`.

    ``cfg.data == "embedded"`` renders them with :class:`unichest_lib.data.world.World`; any
    other value is the path of a real-data YAML file (see :mod:`unichest_lib.data.real`).
    Report texts are replaced by their filtered entities (:func:`filter_report_texts`).
    """
    sources = _check_sources(sources)
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not valid; choose one of {SPLITS}")
    if cfg.data == "embedded":
        from .world import world_of  # lazy: the world pulls in its renderers

        ds = world_of(cfg).dataset(sources, split, with_masks=with_masks)
    else:
        from .real import make_real_dataset

        ds = make_real_dataset(cfg, sources, split, with_masks=with_masks)
    if len(ds) == 0:  # an empty split would train nothing or score NaN without saying why
        raise ValueError(f"the {split!r} split of source(s) {list(sources)} has no samples "
                         f"(data = {cfg.data!r}); check the image folders, 'on_missing: skip' "
                         "and the split fractions, or use more images per source")
    if cfg.report_text == "labels":
        label_texts(ds)  # Table VII ablation: label concatenation for every sample
    else:
        filter_report_texts(ds, cache_dir=cfg.cache_dir)
    return ds


def label_texts(ds: MultiSourceDataset) -> MultiSourceDataset:
    """Replace the texts of report sources by their label concatenation, in place
    (``cfg.report_text == "labels"``: the "Label Concat. All" row of the paper's Table VII).
    Other rows already carry label-concatenation text. Introduced in
    ``notebooks/05_ablations.ipynb``."""
    table = ds.table
    report_ids = [i for i, s in enumerate(table.sources) if s in REPORT_SOURCES]
    for r in np.flatnonzero(np.isin(table.source_ids, report_ids)):
        table.texts[int(r)] = labels_to_text(table.labels[r], table.mask[r], table.classes)
    return ds


def _check_sources(sources: Sequence[str]) -> tuple[str, ...]:
    if isinstance(sources, str):
        sources = (sources,)
    sources = tuple(sources)
    if not sources:
        raise ValueError("sources is empty; give at least one source name, e.g. ('chestxray14',)")
    dup = sorted({s for s in sources if sources.count(s) > 1})
    if dup:
        raise ValueError(f"sources lists {dup} more than once; give each source once")
    return sources


# ---- report texts ---------------------------------------------------------------------
def filter_report_texts(ds: MultiSourceDataset, *, cache_dir: str | os.PathLike | None = None
                        ) -> MultiSourceDataset:
    """Replace the raw reports of report sources by ``report_to_text(report)`` in place.

    Rows of other sources keep their label-concatenation text. Texts that already contain
    ``[SEP]`` are taken as filtered (so calling this twice changes nothing). Results are
    cached in ``cache_dir/report_filter/<hash>.json`` keyed by the texts and the filter's
    version, so a large corpus is filtered once.
    """
    from . import report_filter

    table = ds.table
    report_ids = [i for i, s in enumerate(table.sources) if s in REPORT_SOURCES]
    if not report_ids:
        return ds
    rows = np.flatnonzero(np.isin(table.source_ids, report_ids))
    rows = [int(r) for r in rows if SEP.strip() not in table.texts[r]]
    if not rows:
        return ds
    raw = [table.texts[r] for r in rows]
    filtered = _cached(raw, report_filter.report_to_text, report_filter.VERSION, cache_dir)
    for r, t in zip(rows, filtered):
        table.texts[r] = t
    return ds


def _cached(texts: list[str], fn, version: str, cache_dir) -> list[str]:
    """``[fn(t) for t in texts]`` with a JSON cache file keyed by the texts and ``version``."""
    if cache_dir is None:
        return [fn(t) for t in texts]
    h = hashlib.sha256(version.encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    path = Path(cache_dir) / "report_filter" / f"{h.hexdigest()[:24]}.json"
    if path.is_file():
        try:
            out = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(out, list) and len(out) == len(texts):
                return out
        except (OSError, ValueError):
            log.warning("ignoring unreadable report-filter cache %s", path)
    out = [fn(t) for t in texts]
    atomic_write(path, json.dumps(out))
    return out


# ---- loaders --------------------------------------------------------------------------
def collate(items: list[dict]) -> dict:
    """Stack the tensors of a list of samples; ``text`` stays a list of str."""
    import torch

    if not items:
        raise ValueError("cannot collate an empty list of samples")
    keys = items[0].keys()
    out = {}
    for k in keys:
        vals = [it[k] for it in items]
        out[k] = list(vals) if k == "text" else torch.stack([torch.as_tensor(v) for v in vals])
    return out


def make_loader(dataset: MultiSourceDataset, cfg: Config, *, train: bool,
                batch_size: int | None = None):
    """A ``DataLoader`` over ``dataset``.

    Training loaders shuffle (seeded by ``cfg.seed``) and drop the last incomplete batch (the
    contrastive losses want full batches); evaluation loaders keep every sample in order.
    ``batch_size`` defaults to ``cfg.batch_size`` (train) or ``cfg.eval_batch_size``.
    """
    import torch
    from torch.utils.data import DataLoader

    bs = batch_size if batch_size is not None else (cfg.batch_size if train else cfg.eval_batch_size)
    if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
        raise ConfigError(f"batch_size = {bs!r} must be a positive integer")
    if train and len(dataset) < bs:
        raise ValueError(
            f"the training dataset has {len(dataset)} samples, fewer than one batch of {bs}; "
            "with drop_last=True it would yield no batch. Lower batch_size or add samples "
            "(e.g. a larger n_per_source)")
    gen = torch.Generator()
    gen.manual_seed(int(cfg.seed))
    return DataLoader(
        dataset, batch_size=bs, shuffle=train, drop_last=train, generator=gen,
        num_workers=cfg.num_workers, collate_fn=collate,
        persistent_workers=cfg.num_workers > 0,
    )


def example_batch(dataset: MultiSourceDataset, size: int, *, seed: int = 0) -> dict:
    """A batch of ``size`` samples for a chapter's walk-through, as the trainer's loader
    collates them, drawn so that every source of ``dataset`` is represented (round robin
    over the sources, each source's samples in a seeded random order), sorted by source.
    Introduced in ``notebooks/02_conquer.ipynb``."""
    import numpy as np

    n_src = len(dataset.sources)
    if not isinstance(size, int) or size < n_src:
        raise ValueError(f"an example batch needs at least one sample per source: size = "
                         f"{size!r}, {n_src} sources")
    if size > len(dataset):
        raise ValueError(f"size = {size} exceeds the {len(dataset)} samples of the dataset")
    rng = np.random.default_rng(seed)
    ids = np.asarray(dataset.table.source_ids)
    pools = [list(rng.permutation(np.flatnonzero(ids == s))) for s in range(n_src)]
    chosen: list[int] = []
    while len(chosen) < size:
        for pool in pools:
            if pool and len(chosen) < size:
                chosen.append(int(pool.pop(0)))
    chosen.sort(key=lambda i: (ids[i], i))
    return collate([dataset[i] for i in chosen])


__all__ = ["REPORT_SOURCES", "SPLITS", "collate", "example_batch", "filter_report_texts",
           "label_texts", "make_dataset", "make_loader"]

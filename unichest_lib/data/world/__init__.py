"""The embedded multi-source chest X-ray world: nine procedural sources, one per dataset of
the paper.

:class:`World` turns a :class:`~unichest_lib.config.Config` into nine procedural sources
modelled on the paper's datasets (four pre-training, five downstream) that differ in four
documented ways, scaled together by ``cfg.heterogeneity`` (:mod:`.sources`). Everything is a
function of ``(cfg.world_seed, source, index)``: the same configuration gives the same
pixels, labels, masks and reports. The images are synthetic; nothing computed on them is a
clinical claim.

>>> from unichest_lib.config import resolve
>>> world = World(resolve("smoke"))
>>> train = world.dataset(["mimic", "vindr"], "train")   # doctest: +SKIP

Introduced in ``notebooks/00_data.ipynb``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from ... import config as C
from .. import labels as L
from ..samples import MultiSourceDataset, SampleTable, Triplet, labels_to_text
from . import cache, population as popm, priors, sources as S
from .population import FINDINGS, Population
from .render import RENDER_VERSION, code_digest, render_rows, unpack_masks
from .reports import write_report

CHUNK = 256  # images per rendered (and cached) chunk
#: The :class:`~unichest_lib.config.Config` fields a :class:`World` reads: two configurations
#: that agree on them have the same world (``tests/test_world.py`` checks the list against
#: the code).
WORLD_FIELDS = ("world_seed", "heterogeneity", "dials", "image_size", "n_per_source", "n_downstream",
                "n_valid", "n_test", "cache_dir")
#: Worlds kept per process by :func:`world_of` (each holds the pixels it has loaded: tens of
#: MB at ``tutorial``).
MAX_WORLDS = 2
_WORLDS: dict[tuple, "World"] = {}


def world_of(cfg: C.Config) -> "World":
    """The :class:`World` of ``cfg``, shared by every dataset this process makes from the same
    :data:`WORLD_FIELDS`: populations are drawn and pixel chunks read from the cache once, not
    once per dataset (a chapter asks for the same splits many times). The datasets themselves
    are new objects on every call."""
    key = tuple((f, getattr(cfg, f)) for f in WORLD_FIELDS)
    world = _WORLDS.pop(key, None)  # re-inserted below: the dict is kept in use order
    if world is None:
        world = World(cfg)
        while len(_WORLDS) >= MAX_WORLDS:
            _WORLDS.pop(next(iter(_WORLDS)))
    _WORLDS[key] = world
    return world


class World:
    """The embedded world of one configuration (only the ``world_seed``, ``heterogeneity``,
    ``dials``, ``image_size``, ``n_per_source``, ``n_downstream``, ``n_valid``, ``n_test`` and
    ``cache_dir`` fields matter)."""

    def __init__(self, cfg: C.Config, *, progress: bool = True):
        self.cfg = cfg
        self.progress = progress  # show a progress bar while rendering missing chunks
        self.dials = S.dials(cfg.heterogeneity, C.dial_values(cfg.dials))
        self._pops: dict[str, Population] = {}
        self._chunks: dict[tuple[str, int], dict] = {}
        self._reports: dict[tuple[str, int], tuple[str, list[Triplet]]] = {}

    # ---- the sources ------------------------------------------------------------------
    def spec(self, source: str) -> S.SourceSpec:
        """The source's spec with its dials applied (acquisition, appearance, label noise)."""
        return S.effective(source, self.dials)

    def size(self, source: str) -> int:
        """Number of images of ``source``."""
        self._check(source)
        return S.default_size(source, self.cfg)

    @cached_property
    def real_statistics(self) -> dict:
        """Per-dataset statistics derived from torchxrayvision's shipped metadata."""
        return priors.real_statistics(self.cfg.cache_dir)

    def prior(self, source: str) -> np.ndarray:
        """Prevalence (F,) of each true finding of :data:`FINDINGS` in ``source`` at this
        heterogeneity: ``(1 - h) * pooled + h * source`` (label-prior dial). A class that a
        source's labeller defines broadly (:data:`.sources.BROAD_DEFINITIONS`) is first
        narrowed to the finding behind it (:func:`.population.narrow_prior`, at the source's
        full definition share), so the images do not change with the label-meaning dial: that
        dial changes only how they are labelled."""
        stats = self.real_statistics
        per_source = priors.source_priors(stats)
        real = {}
        for s in per_source:
            p = np.array([per_source[s][c] for c in FINDINGS])
            p = popm.narrow_prior(p, S.BROAD_DEFINITIONS.get(s, {}), S.SPECS[s].meaning.broad)
            real[s] = dict(zip(FINDINGS, p.tolist()))
        pooled = priors.pooled_prior(real)
        h = self.dials.label_prior
        return np.array([(1 - h) * pooled[c] + h * real[source][c] for c in FINDINGS])

    def population(self, source: str) -> Population:
        """Patients, splits, true findings, recorded labels and layout of ``source``."""
        self._check(source)
        if source not in self._pops:
            self._pops[source] = self._make_population(source)
        return self._pops[source]

    def _rng(self, source: str, *purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.world_seed, C.ALL_SOURCES.index(source), *purpose])

    def _make_population(self, source: str) -> Population:
        spec, n = self.spec(source), self.size(source)
        patient = popm.draw_patients(self._rng(source, 1), n, spec.images_per_patient)
        split = popm.split_patients(self._rng(source, 2), patient, self.cfg.n_valid,
                                    self.cfg.n_test)
        prior = self.prior(source)
        truth = popm.draw_findings(self._rng(source, 3), patient, prior)
        unc = self.real_statistics["chexpert"].get("uncertain", {})
        unc_rate = np.array([unc.get(c, 0.0) for c in FINDINGS])
        side, u, v, jitter, kind = popm.draw_layout(self._rng(source, 5), n, spec.appearance.p_right)
        state = popm.record_labels(self._rng(source, 4), truth, spec.noise, unc_rate, prior,
                                   subtle=spec.meaning.subtle, visible=popm.conspicuity(jitter))
        state = popm.broaden(self._rng(source, 6), truth, state, S.BROAD_DEFINITIONS.get(source, {}),
                             spec.meaning.broad)
        names = np.array([f"{source}-p{p:06d}" for p in patient], dtype=object)
        return Population(names, split, truth, state, side, u, v, jitter, kind)

    # ---- pixels ------------------------------------------------------------------------
    def _chunk(self, source: str, k: int) -> dict:
        """Images and sparse masks of chunk ``k`` of ``source`` (from the cache or rendered)."""
        if (source, k) in self._chunks:
            return self._chunks[(source, k)]
        pop, size = self.population(source), self.cfg.image_size
        rows = np.arange(k * CHUNK, min((k + 1) * CHUNK, self.size(source)))
        params = self.chunk_params(source, k, rows)
        folder = self._chunk_folder(source, k)
        expected = {"images": ("uint8", (len(rows), size, size)), "mask_pairs": ("int32", (None, 2)),
                    "mask_bits": ("uint8", (None, (size * size + 7) // 8))}
        arrays = cache.load(folder, expected)
        if arrays is None:
            images, pairs, bits = render_rows(pop, rows, self.spec(source), size,
                                              self._rng(source, 100, k))
            cache.save(folder, {"images": images, "mask_pairs": pairs, "mask_bits": bits}, params)
            arrays = {"images": images, "mask_pairs": pairs, "mask_bits": bits}
        self._chunks[(source, k)] = arrays
        return arrays

    def _chunk_folder(self, source: str, k: int) -> Path:
        rows = np.arange(k * CHUNK, min((k + 1) * CHUNK, self.size(source)))
        params = self.chunk_params(source, k, rows)
        return Path(self.cfg.cache_dir) / "world" / f"{source}-{cache.key(params)}"

    def chunk_params(self, source: str, k: int, rows: np.ndarray) -> dict:
        """Everything that changes the pixels of chunk ``k`` (the cache key)."""
        pop = self.population(source)
        h = cache.key({"truth": pop.truth[rows].tobytes().hex(),
                       "layout": [a[rows].tobytes().hex() for a in (pop.side, pop.u, pop.v, pop.jitter,
                                                                   pop.device_kind)]})
        spec = self.spec(source)
        return {"render_version": RENDER_VERSION, "code": code_digest(), "world_seed": self.cfg.world_seed,
                "heterogeneity": self.cfg.heterogeneity, "image_size": self.cfg.image_size,
                "source": source, "n": self.size(source), "chunk": k, "chunk_size": CHUNK,
                "acquisition": repr(spec.acquisition), "appearance": repr(spec.appearance),
                "population": h}

    def images(self, source: str, rows: Sequence[int]) -> np.ndarray:
        """uint8 images (len(rows), S, S) of ``source``'s rows."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.cfg.image_size, self.cfg.image_size), np.uint8)
        for k in np.unique(rows // CHUNK):
            sel = rows // CHUNK == k
            out[sel] = self._chunk(source, int(k))["images"][rows[sel] - k * CHUNK]
        return out

    def finding_masks(self, source: str, row: int) -> dict[str, np.ndarray]:
        """{finding: bool (S, S)} for every finding present in image ``row`` of ``source``."""
        k = row // CHUNK
        ch = self._chunk(source, k)
        sel = np.flatnonzero(ch["mask_pairs"][:, 0] == row - k * CHUNK)
        masks = unpack_masks(np.asarray(ch["mask_pairs"][sel]), np.asarray(ch["mask_bits"][sel]),
                             CHUNK, self.cfg.image_size)
        return {FINDINGS[j]: m for (_, j), m in masks.items()}

    # ---- reports -----------------------------------------------------------------------
    def report(self, source: str, i: int) -> tuple[str, list[Triplet]]:
        """Free-text report of image ``i`` of a report source and its ground-truth triplets."""
        if not self.spec(source).has_reports:
            raise ValueError(f"source {source!r} has no reports; report sources are "
                             f"{[s for s in C.ALL_SOURCES if S.SPECS[s].has_reports]}")
        if not 0 <= i < self.size(source):
            raise IndexError(f"image {i} out of range for {source!r} with {self.size(source)} images")
        if (source, i) not in self._reports:
            p = self.population(source)
            self._reports[(source, i)] = write_report(self._rng(source, 7, i), FINDINGS, p.state[i],
                                                      p.side[i], p.v[i], int(p.device_kind[i]))
        return self._reports[(source, i)]

    def reports(self, source: str, split: str | None = None) -> list[str]:
        """Raw reports of ``source`` (all images, or those of ``split``), in row order."""
        return [self.report(source, int(i))[0] for i in self.rows(source, split)]

    def rows(self, source: str, split: str | None = None) -> np.ndarray:
        """Row indices of ``source`` that belong to ``split`` (all rows when None)."""
        pop = self.population(source)
        if split is None:
            return np.arange(len(pop.split))
        if split not in popm.SPLITS:
            raise ValueError(f"split = {split!r} is not valid; choose one of {popm.SPLITS}")
        return np.flatnonzero(pop.split == split)

    # ---- the dataset contract -------------------------------------------------------------
    def dataset(self, sources: Sequence[str], split: str, *, with_masks: bool = False) -> MultiSourceDataset:
        """A :class:`~unichest_lib.data.samples.MultiSourceDataset` over ``sources``' ``split``.

        Classes are the union label space of ``sources``; labels outside a source's label
        space are NaN (masked). ``texts`` holds the raw report for report sources (the data
        layer's report filter turns it into entities) and ``[SEP]``-joined positive labels
        otherwise. Extra attributes: ``reports`` (raw report or ``None`` per row),
        ``world_rows`` (row within its source, for :meth:`report`) and ``patients``.
        """
        if isinstance(sources, str):
            sources = (sources,)
        sources = tuple(sources)
        if not sources or len(set(sources)) != len(sources):
            raise ValueError(f"sources = {sources!r}: give a non-empty list of distinct source names")
        for s in sources:
            self._check(s)
        if split not in popm.SPLITS:
            raise ValueError(f"split = {split!r} is not valid; choose one of {popm.SPLITS}")
        classes = L.in_union_order(c for s in sources for c in L.embedded_label_space(s))
        parts = [(si, s, self.rows(s, split)) for si, s in enumerate(sources)]
        labels = np.concatenate([popm.source_labels(self.population(s).state[r], s, classes)
                                 for _, s, r in parts]) if parts else np.zeros((0, len(classes)))
        src_ids = np.concatenate([np.full(len(r), si, np.int64) for si, _, r in parts])
        rows = np.concatenate([r for _, _, r in parts]).astype(np.int64)
        names = [s for _, s, r in parts for _ in r]
        patients = np.concatenate([self.population(s).patients[r] for _, s, r in parts])
        reports = [self.report(s, int(i))[0] if self.spec(s).has_reports else None
                   for s, i in zip(names, rows)]
        mask = ~np.isnan(labels)
        texts = [rep if rep is not None else labels_to_text(np.nan_to_num(y), m, classes)
                 for rep, y, m in zip(reports, labels, mask)]
        table = SampleTable(classes, sources, labels.astype(np.float32), src_ids, patients, texts)
        self.prepare(sources, split)

        def image_fn(i: int) -> np.ndarray:
            return self.images(names[i], [rows[i]])[0]

        def masks_fn(i: int):
            return self.seg_and_boxes(names[i], int(rows[i]), classes)

        ds = MultiSourceDataset(table, image_fn, masks_fn=masks_fn if with_masks else None,
                                name=f"embedded {'+'.join(sources)} {split}")
        ds.reports, ds.world_rows, ds.patients = reports, rows, patients
        return ds

    def prepare(self, sources: Sequence[str], split: str | None = None) -> None:
        """Render (or load from the cache) every chunk that ``sources``' ``split`` needs, now
        rather than inside DataLoader workers; a progress bar when rendering takes a while."""
        todo = [(s, int(k)) for s in sources for k in np.unique(self.rows(s, split) // CHUNK)]
        missing = sum((s, k) not in self._chunks and not (self._chunk_folder(s, k) / "meta.json").exists()
                      for s, k in todo)
        bar = None
        if C.progress_bars(self.progress) and missing > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="embedded world", unit="chunk", leave=False)
        for s, k in todo:
            self._chunk(s, k)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()

    def seg_and_boxes(self, source: str, row: int, classes: Sequence[str]):
        """Per-class masks (c, S, S) bool and boxes (c, 4) x0, y0, x1, y1 (NaN if absent)."""
        s = self.cfg.image_size
        found = self.finding_masks(source, row)
        seg = np.zeros((len(classes), s, s), bool)
        boxes = np.full((len(classes), 4), np.nan, np.float32)
        for j, c in enumerate(classes):
            m = found.get(c)
            if m is None or not m.any():
                continue
            seg[j] = m
            ys, xs = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            boxes[j] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        return seg, boxes

    @staticmethod
    def _check(source: str) -> None:
        if source not in S.SPECS:
            raise ValueError(f"unknown embedded source {source!r}; known sources: "
                             f"{', '.join(C.ALL_SOURCES)}")


__all__ = ["CHUNK", "FINDINGS", "MAX_WORLDS", "WORLD_FIELDS", "World", "world_of"]

"""Helpers shared by the test files: a plain module (``from helpers import synth``), the one
place they live; there are no fixtures of the same names.

* :func:`synth` / :func:`tiny_cfg` — a tiny synthetic multi-source dataset in the library's
  sample contract and the matching fast configuration (32 px, 2 steps per epoch), for the
  trainer, the stages, DDP and resuming;
* :func:`fake_dataset` — a hand-made dataset whose lesions are bright squares with exact
  masks and boxes, for evaluation, grounding and transfer;
* :func:`execute_notebook` / :func:`outputs_text` — run a chapter with papermill at the repo
  root and read its outputs back.

pytest puts this folder on ``sys.path`` for every test file; a spawned DDP worker or a child
process's script inserts it itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from unichest_lib.config import resolve
from unichest_lib.data.label_spaces import observed_mask, union_classes
from unichest_lib.data.samples import MultiSourceDataset, SampleTable, labels_to_text

ROOT = Path(__file__).resolve().parents[1]
PLOTLY = "application/vnd.plotly.v1+json"

# ---- a tiny synthetic multi-source dataset (trainer tests) --------------------------------
SOURCES = ("chestxray14", "vindr")


def synth(sources, n_per_source: int, size: int, seed: int) -> MultiSourceDataset:
    """A small multi-source dataset in the library's sample contract: class 0 brightens the
    image, every other label is noise; unobserved classes are missing (NaN)."""
    classes = union_classes(sources, "embedded")
    rng = np.random.default_rng(seed)
    src = np.repeat(np.arange(len(sources)), n_per_source)
    mask = np.stack([observed_mask(s, classes, "embedded") for s in sources])[src]
    y = (rng.random((len(src), len(classes))) < 0.3).astype(np.float32)
    y[~mask] = np.nan
    texts = [labels_to_text(np.nan_to_num(y[i]), mask[i], classes) for i in range(len(src))]
    imgs = rng.random((len(src), size, size)).astype(np.float32) * 0.5
    imgs += np.nan_to_num(y[:, :1])[:, :, None] * 0.5
    table = SampleTable(tuple(classes), tuple(sources), y, src.astype(np.int64),
                        np.array([f"p{i}" for i in range(len(src))], dtype=object), texts)
    return MultiSourceDataset(table, lambda i: imgs[i], name="synth")


def tiny_cfg(**kw):
    """The smoke profile at 32 px, two steps per epoch, deterministic, no augmentation."""
    base = dict(sources=",".join(SOURCES), val_source="chestxray14", image_size=32,
                batch_size=4, eval_batch_size=16, augment=False, fourier_mixup_p=0.0,
                amp=False, max_steps_per_epoch=2, conquer_epochs=2, divide_epochs=1,
                deterministic=True, dropout=0.0)
    base.update(kw)
    return resolve("smoke", **base)


# ---- a hand-made dataset with exact lesion masks (evaluation tests) ------------------------
FAKE_CLASSES = ("nodule", "pneumothorax")  # nodule squares on the left half, pneumothorax right
FAKE_SIZE = 64


def fake_dataset(n=37, seed=0, classes=FAKE_CLASSES, with_masks=False):
    """``n`` images of ``FAKE_SIZE`` px: a bright 8 x 10 square per positive of the first two
    classes (left half: class 0, right half: class 1), with its mask and box."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 2, (n, len(classes))).astype(np.float32)
    lab[0], lab[1] = 0, 1  # both values present for every class
    imgs = np.zeros((n, FAKE_SIZE, FAKE_SIZE), np.float32)
    segs = np.zeros((n, len(classes), FAKE_SIZE, FAKE_SIZE), bool)
    boxes = np.full((n, len(classes), 4), np.nan, np.float32)
    for i in range(n):
        for j in range(len(classes)):
            if lab[i, j] and j < 2:  # later classes have no visible sign
                x0 = rng.integers(4, 20) + 32 * (j % 2)
                y0 = rng.integers(4, 44)
                imgs[i, y0:y0 + 10, x0:x0 + 8] = 1.0
                segs[i, j, y0:y0 + 10, x0:x0 + 8] = True
                boxes[i, j] = (x0, y0, x0 + 8, y0 + 10)
    table = SampleTable(classes=classes, sources=("fake",), labels=lab,
                        source_ids=np.zeros(n, np.int64), patients=np.arange(n).astype(str),
                        texts=["t"] * n)
    return MultiSourceDataset(table, lambda i: imgs[i],
                              masks_fn=(lambda i: (segs[i], boxes[i])) if with_masks else None)


# ---- chapters ------------------------------------------------------------------------------
def outputs_text(nb) -> tuple[str, int]:
    """All stream and text outputs of an executed notebook, and its number of plotly figures."""
    text, figures = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append(out["text"])
            data = out.get("data", {})
            figures += PLOTLY in data
            text.append(data.get("text/plain", "") + data.get("text/markdown", "")
                        + data.get("text/html", "")[:2000])
    return "\n".join(text), figures


def execute_notebook(path: Path, out: Path, **params):
    """Run the notebook at ``path`` with papermill (offline, cwd = the repository root, no
    ``UNICHEST_PROFILE`` from the environment); ``params`` are its parameters."""
    import papermill as pm

    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    old = {k: os.environ.get(k) for k in [*env, "UNICHEST_PROFILE"]}
    os.environ.update(env)
    os.environ.pop("UNICHEST_PROFILE", None)
    try:
        return pm.execute_notebook(str(path), str(out), parameters=params, cwd=str(ROOT),
                                   kernel_name="python3", progress_bar=False)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def glued(nb) -> dict[str, str]:
    """The values a chapter handed to its markdown with myst-nb's ``glue``, by name, as the
    text the book shows."""
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            plain = o.get("data", {}).get("application/papermill.record/text/plain")
            if name and plain is not None:
                out[name] = plain
    return out

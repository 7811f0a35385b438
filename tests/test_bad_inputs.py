"""Bad inputs: each case feeds the library one bad input and checks what the user sees.

The cases are recorded (area, case, input, where, outcome, message, test) and rendered as
the book's appendix table (:mod:`unichest_lib.book.badinputs`); ``test_the_book_table_is_current``
fails when the committed table no longer matches. Re-record with
``UNICHEST_UPDATE_BAD_INPUTS=1 pytest tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import logging
import math
import os
import pathlib
import pickle
import re
import warnings
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from unichest_lib import cli, data
from unichest_lib.book import badinputs, notebook
from unichest_lib.config import ConfigError, resolve
from unichest_lib.data import real
from unichest_lib.data.label_spaces import observed_mask, union_classes
from unichest_lib.data.real import images, parsers, registry
from unichest_lib.training import checkpoints, stages, store
from unichest_lib.training.trainer import Trainer, class_index
from unichest_lib.training.features import RunCache

ROOT = pathlib.Path(__file__).resolve().parent.parent
UPDATE = os.environ.get("UNICHEST_UPDATE_BAD_INPUTS") == "1"
CK_CFG = resolve("smoke", image_size=32, sources="chestxray14,vindr", val_source="chestxray14")


@dataclasses.dataclass(frozen=True)
class Case:
    area: str
    case: str
    input: str
    where: str
    expect: str  # exception type name, "warning" (logged or warnings.warn) or "handled"
    words: tuple[str, ...]  # must all appear in the message
    fn: Callable[[pathlib.Path], object]
    test: str = ""  # another test covering the full path, if any


CASES: list[Case] = []


def case(area, name, input, where, expect, *words, test=""):
    def deco(fn):
        CASES.append(Case(area, name, input, where, expect, tuple(words), fn, test))
        return fn
    return deco


# ---- 1. parameters -------------------------------------------------------------------------
PARAM = "Parameters (notebooks and command line)"
BAD_PARAMS = [  # (case, overrides, words)
    ("K = 0", dict(K=0), ("'K'", "0", ">= 1")),
    ("K not an integer", dict(K=2.5), ("'K'", "2.5", "int")),
    ("λ = 1.5", dict(lam=1.5), ("'lam'", "1.5", "[0, 1]")),
    ("world dial out of range", dict(dials="label_meaning=1.5"),
     ("'dials'", "label_meaning", "1.5", "[0, 1]")),
    ("unknown world dial", dict(dials="meaning=0"), ("'dials'", "meaning=0", "label_meaning")),
    ("unknown source", dict(sources="mimic,mimc"), ("'sources'", "mimc", "chestxray14")),
    ("unknown pre-training method", dict(method="kad"), ("'method'", "'kad'", "medklip")),
    ("option of another method", dict(method="clip", method_options="local=0.5"),
     ("'method_options'", "local=0.5", "'clip'")),
    ("negative loss weight of a baseline", dict(method="mgca", method_options="local=-1"),
     ("'method_options'", "local", "-1", ">= 0")),
    ("image size not divisible by the stride", dict(image_size=100),
     ("'image_size'", "100", "multiple of 32")),
    ("batch size 1 with contrastive losses", dict(batch_size=1), ("'batch_size'", "1", ">= 2")),
    ("empty source list", dict(sources=""), ("'sources'", "empty")),
    ("misspelt parameter name", dict(lamda=0.3), ("'lamda'", "did you mean 'lam'")),
    ("unknown variant", dict(combine="mean"), ("'combine'", "'mean'", "probabilities")),
    ("unknown device", dict(device="gpu"), ("'device'", "'gpu'", "cuda:N")),
    ("validation source not trained on", dict(sources="mimic", val_source="chestxray14"),
     ("'val_source'", "chestxray14", "mimic")),
]
WHERE_PARAM = "config.resolve; CLI conquer / divide / evaluate; notebook.setup (same message)"


def _param_case(overrides):
    return lambda tmp: resolve("smoke", **overrides)


for _name, _over, _words in BAD_PARAMS:
    case(PARAM, _name, ", ".join(f"{k}={v!r}" for k, v in _over.items()), WHERE_PARAM,
         "ConfigError", *_words)(_param_case(_over))


@case(PARAM, "unknown profile", "profile='huge'", "config.resolve; notebook.setup", "ConfigError",
      "'huge'", "smoke, tutorial, paper")
def _(tmp):
    resolve("huge")


@case(PARAM, "unknown profile on the command line", "--profile huge", "CLI (argparse)",
      "SystemExit", "invalid choice", "'huge'")
def _(tmp):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cli.parse(["conquer", "--profile", "huge"])
    except SystemExit as e:
        raise SystemExit(err.getvalue().strip().splitlines()[-1]) from None


@case(PARAM, "unknown profile in the environment", "UNICHEST_PROFILE=huge", "notebook.setup",
      "ConfigError", "UNICHEST_PROFILE", "'huge'")
def _(tmp):
    old = os.environ.get(notebook.PROFILE_ENV)
    os.environ[notebook.PROFILE_ENV] = "huge"
    try:
        notebook.setup(quiet=True)
    finally:
        os.environ.pop(notebook.PROFILE_ENV) if old is None else \
            os.environ.__setitem__(notebook.PROFILE_ENV, old)


@case(PARAM, "unknown command-line option", "--lamda 0.3", "CLI", "ConfigError",
      "--lamda", "did you mean --lam")
def _(tmp):
    cli.parse(["divide", "--profile", "smoke", "--lamda", "0.3"])


@case(PARAM, "CUDA asked for but absent", "device='cuda' on a machine without a GPU",
      "Trainer / evaluation (distributed.resolve_device)", "RuntimeError", "'cuda'", "no CUDA GPU")
def _(tmp):
    from unichest_lib.training import distributed

    real = torch.cuda.is_available
    torch.cuda.is_available = lambda: False  # the same message on a GPU machine
    try:
        distributed.resolve_device("cuda")
    finally:
        torch.cuda.is_available = real


@case(PARAM, "notebook-only parameter out of range", "papermill -p images_per_source 0",
      "notebook parameters cell (notebook.check_int)", "ConfigError", "'images_per_source'", ">= 1",
      test="tests/test_notebooks.py::test_bad_parameter_fails_before_any_work")
def _(tmp):
    notebook.check_int("images_per_source", 0)


# ---- 2. data -------------------------------------------------------------------------------
DATA = "Data"


def _png(path, mode="L", size=(40, 30), value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr = np.linspace(0, 4000, size[0] * size[1]).reshape(size[1], size[0]).astype(np.uint16)
        Image.fromarray(arr).save(path)
    else:
        Image.new(mode, size, value if mode == "L" else (value, value // 2, 0)).save(path)
    return path


def _chexpert_csv(tmp, edema=(1.0, 0.0, -1.0), rename=None):
    rows = [{"Path": f"CheXpert-v1.0-small/train/patient0000{i}/study1/view1_frontal.jpg",
             "Frontal/Lateral": "Frontal", "AP/PA": "PA", "Sex": "Male", "Age": 50}
            for i in range(len(edema))]
    csv = pd.DataFrame(rows)
    for c in registry.CHEX_COLS:
        csv[c] = np.nan
    csv["Edema"] = list(edema)
    if rename:
        csv = csv.rename(columns=rename)
    p = tmp / "train.csv"
    csv.to_csv(p, index=False)
    return p


def _load_chexpert(tmp, csvpath):
    real.dataset._load_frame_cached.cache_clear()
    return real.load_frame("chexpert", {"imgpath": str(tmp), "csvpath": str(csvpath)})


def _yaml(tmp, spec):
    p = tmp / "real.yaml"
    p.write_text(yaml.safe_dump(spec))
    return str(p)


def _chestxdet10(tmp, names, split=None):
    """A ChestX-Det10 description with ``names`` listed (images written separately)."""
    ann = tmp / "train.json"
    ann.write_text(json.dumps([{"file_name": n, "syms": ["Nodule"], "boxes": [[1, 2, 30, 40]]}
                               for n in names]))
    (tmp / "img").mkdir(exist_ok=True)
    spec = {"datasets": {"chestxdet10": {"imgpath": str(tmp / "img"), "annotations": str(ann)}}}
    if split:
        spec["split"] = split
    return resolve("smoke", data=_yaml(tmp, spec), sources="chestxdet10",
                   val_source="chestxdet10", cache_dir=str(tmp / "cache"))


@case(DATA, "missing image file", "read_image('<tmp>/nope.png', dataset='chestxray14')",
      "real.read_image", "FileNotFoundError", "nope.png", "does not exist", "nihcc")
def _(tmp):
    images.read_image(str(tmp / "nope.png"), 32, dataset="chestxray14")


@case(DATA, "images listed but not on disk", "ChestX-Det10 YAML, 40 images listed, none present",
      "data.make_dataset (on_missing: error, the default)", "FileNotFoundError",
      "missing", "on_missing: skip")
def _(tmp):
    data.make_dataset(_chestxdet10(tmp, [f"{i}.png" for i in range(40)]), ["chestxdet10"], "train")


@case(DATA, "images not on disk, skipping allowed", "same, 20 of 40 present, 'on_missing: skip'",
      "data.make_dataset", "warning", "skipping", "on_missing: skip")
def _(tmp):
    cfg = _chestxdet10(tmp, [f"{i}.png" for i in range(40)], split={"valid": 0.0, "test": 0.0})
    names = [f"{i}.png" for i in range(40)]
    for n in names[:20]:
        _png(tmp / "img" / n)
    spec = yaml.safe_load(pathlib.Path(cfg.data).read_text())
    spec["datasets"]["chestxdet10"]["on_missing"] = "skip"
    ds = data.make_dataset(cfg.replace(data=_yaml(tmp, spec)), ["chestxdet10"], "train")
    assert len(ds) == 20


@case(DATA, "corrupt / truncated image", "a PNG cut to half its bytes", "real.read_image",
      "ValueError", "cannot read image", "corrupt")
def _(tmp):
    p = _png(tmp / "x.png", size=(64, 64))
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    images.read_image(str(p), 32, dataset="chexpert")


@case(DATA, "not an image at all", "a text file named x.png", "real.read_image", "ValueError",
      "cannot read image", "corrupt")
def _(tmp):
    (tmp / "x.png").write_text("hello")
    images.read_image(str(tmp / "x.png"), 32)


@case(DATA, "colour (RGB) image", "an RGB PNG", "real.read_image", "warning",
      "converting RGB images to grayscale")
def _(tmp):
    images._NOTED.discard(("padchest", "RGB"))
    a = images.read_image(str(_png(tmp / "rgb.png", mode="RGB")), 32, dataset="padchest")
    assert a.shape == (32, 32) and a.dtype == np.float32


@case(DATA, "16-bit image", "a 16-bit PNG (values 0..4000)", "real.read_image", "handled",
      "min-max", "0.0", "1.0")
def _(tmp):
    a = images.read_image(str(_png(tmp / "deep.png", mode="I;16")), 32)
    return (f"read as grayscale float32 {a.shape}, min-max scaled to "
            f"[{a.min():.1f}, {a.max():.1f}] (not divided by 255)")


@case(DATA, "CSV with a missing column", "ChestX-ray14 CSV without 'Finding Labels'",
      "real datasets (any CSV option)", "ValueError", "lacks column(s)", "Finding Labels")
def _(tmp):
    p = tmp / "nih.csv"
    pd.DataFrame({"Image Index": ["a.png"], "Patient ID": [1], "View Position": ["PA"],
                  "Patient Age": [50]}).to_csv(p, index=False)
    parsers.require_columns(p, ["Image Index", "Finding Labels", "Patient ID", "View Position",
                                 "Patient Age"], "chestxray14")


@case(DATA, "CSV with a renamed column", "CheXpert CSV with 'Edema' renamed 'edema'",
      "real.load_frame", "ValueError", "lacks column(s)", "'Edema'")
def _(tmp):
    _load_chexpert(tmp, _chexpert_csv(tmp, rename={"Edema": "edema"}))


@case(DATA, "label value 2", "CheXpert CSV, Edema column holds 2", "real.load_frame",
      "ValueError", "'Edema'", "2.0", "-1 = uncertain")
def _(tmp):
    _load_chexpert(tmp, _chexpert_csv(tmp, edema=(1.0, 2.0, 0.0)))


@case(DATA, "label value 'yes'", "CheXpert CSV, Edema column holds 'yes'", "real.load_frame",
      "ValueError", "'Edema'", "'yes'")
def _(tmp):
    _load_chexpert(tmp, _chexpert_csv(tmp, edema=(1.0, "yes", 0.0)))


@case(DATA, "label value 2 from any parser", "a parsed frame whose label column holds 2",
      "real.harmonise", "ValueError", "'Effusion'", "2.0")
def _(tmp):
    frame = pd.DataFrame({"path": ["a", "b"], "patient": ["1", "2"], "Effusion": [1.0, 2.0]})
    real.harmonise(frame, "chestxray14", ("effusion",))


@case(DATA, "empty split", "ChestX-Det10 YAML with split {valid: 0, test: 0}, asking for 'valid'",
      "data.make_dataset", "ValueError", "'valid'", "no samples", "split fractions")
def _(tmp):
    cfg = _chestxdet10(tmp, ["a.png", "b.png"], split={"valid": 0.0, "test": 0.0})
    data.make_dataset(cfg, ["chestxdet10"], "valid")


@case(DATA, "no class shared with the model's queries",
      "a model trained on chestxray14's classes validated on shenzhen (tuberculosis)",
      "trainer.class_index (checkpoint selection); classification.in_domain", "ValueError",
      "tuberculosis", "not trained", test="tests/test_evaluate.py::test_in_domain_refuses_classes_the_model_never_saw")
def _(tmp):
    class_index(union_classes(["chestxray14"], "embedded"), union_classes(["shenzhen"], "embedded"))


@case(DATA, "unknown split", "split='training'", "data.make_dataset", "ValueError",
      "'training'", "valid")
def _(tmp):
    data.make_dataset(resolve("smoke"), ["chestxray14"], "training")


@case(DATA, "source listed twice", "sources=['vindr', 'vindr']", "data.make_dataset", "ValueError",
      "more than once")
def _(tmp):
    data.make_dataset(resolve("smoke"), ["vindr", "vindr"], "train")


@case(DATA, "data file that does not exist", "data='<tmp>/missing.yml'", "data.make_dataset",
      "ConfigError", "neither 'embedded' nor")
def _(tmp):
    data.make_dataset(resolve("smoke", data=str(tmp / "missing.yml"), sources="chestxray14"),
                      ["chestxray14"], "train")


@case(DATA, "misspelt dataset in the YAML", "datasets: {chexpret: ...}", "real.read_spec",
      "ConfigError", "'chexpret'", "did you mean 'chexpert'")
def _(tmp):
    real.read_spec(_yaml(tmp, {"datasets": {"chexpret": {"imgpath": str(tmp)}}}))


# ---- 3./4. files ---------------------------------------------------------------------------
FILES = "Checkpoints and artefacts"
_PROTO: list = []


def proto():
    if not _PROTO:
        from unichest_lib.model import UniChest

        _PROTO.append(UniChest(CK_CFG, union_classes(CK_CFG.sources, CK_CFG.data)))
    return _PROTO[0]


def _saved(tmp):
    checkpoints.save(tmp / "ck", proto(), CK_CFG)
    return tmp / "ck.safetensors"


@case(FILES, "tampered checkpoint", "one byte of the .safetensors file flipped",
      "checkpoints.load", "CheckpointError", "fails its checksum")
def _(tmp):
    f = _saved(tmp)
    blob = bytearray(f.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    f.write_bytes(bytes(blob))
    checkpoints.load(tmp / "ck")


@case(FILES, "truncated checkpoint", "the .safetensors file cut to a third (killed copy)",
      "checkpoints.load", "CheckpointError", "fails its checksum")
def _(tmp):
    f = _saved(tmp)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    checkpoints.load(tmp / "ck")


@case(FILES, "checkpoint from another configuration", "load with embed_dim=32, n_heads=4",
      "checkpoints.load", "CheckpointError", "embed_dim", "retrain",
      test="tests/test_checkpoints.py::test_a_different_configuration_is_refused_with_a_diff")
def _(tmp):
    _saved(tmp)
    checkpoints.load(tmp / "ck", CK_CFG.replace(embed_dim=32, n_heads=4))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@case(FILES, "legacy .pt file with a code-executing pickle",
      "a .pt whose pickle would call os.mkdir", "checkpoints.load (weights_only=True)",
      "CheckpointError", "refusing to load", "weights_only=True", "could run code")
def _(tmp):
    marker = tmp / "pwned"
    with open(tmp / "bad.pt", "wb") as f:
        pickle.dump({"model": _Exploit(str(marker))}, f)
    try:
        checkpoints.load(tmp / "bad.pt", CK_CFG)
    finally:
        assert not marker.exists(), "loading a .pt file executed code"


@case(FILES, "missing checkpoint", "load('<tmp>/nothing')", "checkpoints.load", "CheckpointError",
      "nothing")
def _(tmp):
    checkpoints.load(tmp / "nothing")


@case(FILES, "NaN parameters", "a model with one NaN weight saved", "checkpoints.save",
      "CheckpointError", "non-finite")
def _(tmp):
    m = copy.deepcopy(proto())
    with torch.no_grad():
        w = next(p for p in m.parameters() if p.requires_grad)
        w[(0,) * w.dim()] = math.nan
    checkpoints.save(tmp / "nan", m, CK_CFG)


class _Tiny:
    def __init__(self):
        self.w = torch.arange(4.0)

    def state_dict(self):
        return {"w": self.w}


@case(FILES, "damaged artefact in the store", "a stored Conquer checkpoint cut by 7 bytes",
      "store.conquer_checkpoint", "warning", "failed its checksum", "rebuilding",
      test="tests/test_store.py::test_damaged_artifact_is_detected_and_rebuilt")
def _(tmp):
    cfg = CK_CFG.replace(cache_dir=str(tmp))
    builds = []

    def fake_build(cfg, stage, progress):  # stands in for training (tests/test_train_stages.py)
        builds.append(stage)
        run = store.artifact_dir(cfg, stage) / "run"
        checkpoints.save(run / "best", _Tiny(), cfg, extra={"best_metric": 0.5})
        return store._publish(cfg, stage, run / "best")

    real, store._build = store._build, fake_build
    try:
        path = store.conquer_checkpoint(cfg, progress=False)
        f = pathlib.Path(str(path) + ".safetensors")
        f.write_bytes(f.read_bytes()[:-7])
        store.conquer_checkpoint(cfg, progress=False)
    finally:
        store._build = real
    assert builds == ["conquer", "conquer"] and store.is_valid(cfg, "conquer")


# ---- 5./6. training --------------------------------------------------------------------------
TRAIN = "Training runs"


@case(TRAIN, "NaN / Inf in a loss term", "multilabel_loss = NaN at step 7 of a mimic + chexpert batch",
      "Trainer.train_step", "NonFiniteLossError", "step 7", "multilabel_loss", "mimic",
      "No checkpoint was written",
      test="tests/test_train.py::test_non_finite_loss_raises_naming_the_term_and_writes_no_checkpoint")
def _(tmp):
    fake = SimpleNamespace(stage="conquer", step=6, epoch=0,
                           train_set=SimpleNamespace(sources=("mimic", "chexpert")))
    terms = {"bcl_loss": torch.tensor(0.7), "multilabel_loss": torch.tensor(math.nan),
             "loss": torch.tensor(math.nan)}
    batch = {"source": torch.tensor([0, 1, 1]), "index": torch.tensor([3, 14, 15])}
    Trainer._check_finite(fake, terms, batch)


@case(TRAIN, "SIGKILL mid-epoch, then --resume", "kill -9 during epoch 2 of a smoke run",
      "stages.conquer(resume=True)", "handled", "intact", "bit",
      test="tests/test_train_resume.py::test_sigkill_mid_epoch_keeps_last_checkpoint_and_resume_is_bit_identical")
def _(tmp):
    return ("the last completed checkpoint stays intact and loadable (written atomically, "
            "checksum-verified); resuming reproduces the uninterrupted run bit for bit "
            "(checked by the test named on the left, which kills a real run)")


@case(TRAIN, "test split used for checkpoint selection", "spy on every make_dataset call of "
      "conquer + divide at smoke", "stages.conquer / stages.divide", "handled", "never", "'test'",
      test="tests/test_bad_inputs.py::test_training_never_reads_the_test_split")
def _(tmp):
    return ("never happens: training requests only the 'train' split of cfg.sources and the "
            "'valid' split of cfg.val_source; 'test' is left to the evaluation package")


def _trainer(tmp, run_key="run-A", val_labels=None):
    """A Conquer Trainer on tiny synthetic data with 0 epochs: fit() only validates and saves."""
    cfg = CK_CFG.replace(conquer_epochs=0, batch_size=4, augment=False, amp=False)
    train_set, val_set = _synth(cfg, cfg.sources, "train"), _synth(cfg, [cfg.val_source], "valid")
    if val_labels is not None:
        val_set.table.labels[:] = np.where(val_set.table.mask, val_labels, np.nan)
    return Trainer(cfg, "conquer", tmp / "run", progress=False,
                   callbacks=[RunCache(run_key)]).bind(copy.deepcopy(proto()), train_set, val_set)


@case(TRAIN, "resume with nothing to resume", "fit(resume=True) in an empty out_dir",
      "Trainer.fit / CLI --resume", "warning", "no 'last' checkpoint", "starting from epoch 1")
def _(tmp):
    _trainer(tmp).fit(resume=True)


@case(TRAIN, "resume another run's checkpoint", "fit(resume=True) where a run of another "
      "configuration left its 'last' checkpoint", "Trainer.fit / CLI --resume", "CheckpointError",
      "cannot resume", "different configuration")
def _(tmp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(tmp, "run-A").fit()
    _trainer(tmp, "run-B").fit(resume=True)


@case(TRAIN, "validation split without positives", "every validation label 0",
      "Trainer (checkpoint selection)", "warning", "validation aAUC", "nan", "val_source")
def _(tmp):
    _trainer(tmp, val_labels=0.0).fit()


LEAK = "Leakage"


@case(LEAK, "one patient's images in several splits", "2 000 images of 500 patients (4 each)",
      "real.patient_split (real data); World splits (embedded)", "handled",
      "0 patients in more than one split",
      test="tests/test_data_real.py::test_shipped_metadata_splits_are_patient_disjoint, "
           "tests/test_world.py::test_splits_are_patient_disjoint_and_patients_have_several_images")
def _(tmp):
    patients = np.repeat([f"p{i}" for i in range(500)], 4)
    split = real.patient_split(patients, "chexpert")
    per_patient = pd.Series(split).groupby(patients).nunique()
    share = {k: round(float(np.mean(split == k)), 2) for k in data.SPLITS}
    return (f"{int((per_patient > 1).sum())} patients in more than one split; image shares "
            f"{share} (by a hash of source and patient id, stable across runs)")


@case(LEAK, "split fractions that leave no training data", "split: {valid: 0.5, test: 0.6}",
      "real.patient_split (the YAML's split:)", "ConfigError", "f + g < 1")
def _(tmp):
    real.patient_split(["p1"], "chexpert", {"valid": 0.5, "test": 0.6})


# ---- running and recording ------------------------------------------------------------------
class _Logs(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def sanitise(text: str, tmp: pathlib.Path) -> str:
    text = text.replace(str(tmp), "<tmp>").replace(str(ROOT), "<repo>")
    text = re.sub(r"(Valid names|Options are the Config fields): .*", r"\1: <every Config field>",
                  text)  # so that adding a field does not make the table stale
    text = re.sub(r"\b\d+ bytes\b", "<n> bytes", text)
    return re.sub(r"\b[0-9a-f]{12,64}\b", "<sha>", text)


def run_case(c: Case, tmp: pathlib.Path) -> dict:
    """Run one case; the record says what the user saw."""
    handler, logger = _Logs(), logging.getLogger("unichest_lib")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    outcome, message = "handled", ""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = c.fn(tmp)
        said = [str(w.message) for w in caught] + handler.messages
        if said:
            outcome, message = "warning", " / ".join(said)
        else:
            message = str(result) if result is not None else "accepted silently"
    except (Exception, SystemExit) as e:
        outcome, message = type(e).__name__, str(e)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return dict(area=c.area, case=c.case, input=c.input, where=c.where, outcome=outcome,
                message=sanitise(message, tmp), test=c.test)


RECORDS: dict[str, dict] = {}


def _id(c: Case) -> str:
    return re.sub(r"\W+", "_", c.case).strip("_")


@pytest.mark.parametrize("c", CASES, ids=_id)
def test_bad_input_gives_a_clear_outcome(c, tmp_path):
    r = RECORDS[c.case] = run_case(c, tmp_path)
    assert r["outcome"] == c.expect, f"{c.case}: expected {c.expect}, got {r['outcome']}: " \
                                     f"{r['message']}"
    for w in c.words:
        assert w in r["message"], f"{c.case}: message lacks {w!r}: {r['message']}"


def test_the_book_table_is_current(tmp_path_factory):
    """The committed JSON equals what the cases record now, and the page renders from it."""
    records = [RECORDS.get(c.case) or run_case(c, tmp_path_factory.mktemp(_id(c)))
               for c in CASES]  # reuse what the parametrised test recorded in this session
    if UPDATE:
        badinputs.write(records)
    assert badinputs.JSON_PATH.is_file(), "run UNICHEST_UPDATE_BAD_INPUTS=1 pytest " + __file__
    committed = badinputs.load()
    stale = [f"{r['case']}: now {r['outcome']}: {r['message']!r}" for r in records
             if r not in committed]
    assert not stale and len(committed) == len(records), (
        "book/bad_inputs.json is out of date; re-record with UNICHEST_UPDATE_BAD_INPUTS=1 "
        "pytest tests/test_bad_inputs.py\n" + "\n".join(stale))
    assert badinputs.PAGE_PATH.read_text(encoding="utf-8") == badinputs.render(committed), \
        "book/appendix_bad_inputs.md is stale: run python -m unichest_lib.book.badinputs"


# ---- the same parameter message from every entry point -----------------------------------
@pytest.mark.parametrize("name, overrides, words", BAD_PARAMS, ids=[b[0] for b in BAD_PARAMS])
def test_every_entry_point_gives_the_same_message_before_any_work(name, overrides, words,
                                                                   monkeypatch, capsys):
    def no_work(*a, **k):
        raise AssertionError("work started despite a bad parameter")

    for fn in ("conquer", "divide"):
        monkeypatch.setattr(stages, fn, no_work)
    monkeypatch.setattr(store, "stage_checkpoint", no_work)
    monkeypatch.setattr(store, "load_model", no_work)
    monkeypatch.setattr(notebook, "seed_everything", no_work)
    with pytest.raises(ConfigError) as ref:
        resolve("smoke", **overrides)
    with pytest.raises(ConfigError) as nb:
        notebook.setup("smoke", quiet=True, **overrides)
    assert str(nb.value) == str(ref.value)
    with pytest.raises(ConfigError) as ref:  # the command line gives every value as text
        resolve("smoke", **{k: str(v) for k, v in overrides.items()})
    for verb in cli.VERBS:
        argv = [verb, "--profile", "smoke"] + [a for k, v in overrides.items()
                                                for a in (f"--{k}", str(v))]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        if "lamda" in overrides:
            assert "--lamda" in err and "did you mean --lam" in err
        else:
            assert err.strip() == f"error: {ref.value}"


# ---- leakage: training never touches the test split ---------------------------------------
def _synth(cfg, sources, split):
    """A tiny dataset in the sample contract (random pixels) standing in for ``split``."""
    from unichest_lib.data.samples import MultiSourceDataset, SampleTable, labels_to_text

    sources = tuple([sources] if isinstance(sources, str) else sources)
    classes = union_classes(sources, cfg.data)
    rng = np.random.default_rng(len(split))
    src = np.repeat(np.arange(len(sources)), 8)
    mask = np.stack([observed_mask(s, classes, cfg.data) for s in sources])[src]
    y = (rng.random((len(src), len(classes))) < 0.3).astype(np.float32)
    y[:2], y[2:4] = 0.0, 1.0  # both values of every class in every split
    y[~mask] = np.nan
    texts = [labels_to_text(np.nan_to_num(y[i]), mask[i], classes) for i in range(len(src))]
    imgs = rng.random((len(src), cfg.image_size, cfg.image_size)).astype(np.float32)
    table = SampleTable(classes, sources, y, src.astype(np.int64),
                        np.array([f"{split}{i}" for i in range(len(src))], dtype=object), texts)
    return MultiSourceDataset(table, lambda i: imgs[i], name=f"synth-{split}")


@pytest.mark.slow
def test_training_never_reads_the_test_split(tmp_path, monkeypatch):
    """Checkpoint selection (both stages) asks data.make_dataset only for the training split
    of cfg.sources and the validation split of cfg.val_source, for embedded and real data
    alike (both go through make_dataset; a spy stands in for it so the test stays fast)."""
    cfg = resolve("smoke", sources="chestxray14,vindr", val_source="chestxray14", image_size=32,
                  batch_size=4, max_steps_per_epoch=1, augment=False, amp=False, K=2,
                  cache_dir=str(tmp_path / "cache"))
    calls = []

    def spy(cfg, sources, split, **kw):
        calls.append((tuple([sources] if isinstance(sources, str) else sources), split))
        return _synth(cfg, sources, split)

    monkeypatch.setattr(data, "make_dataset", spy)
    c = stages.conquer(cfg, tmp_path / "conquer", progress=False)
    stages.divide(cfg, c.checkpoint, tmp_path / "divide", progress=False)
    assert calls, "the spy saw no make_dataset call: training bypasses data.make_dataset"
    assert all(split != "test" for _, split in calls), calls
    assert set(calls) == {(cfg.sources, "train"), ((cfg.val_source,), "valid")}, calls


def test_case_names_are_unique():
    names = [c.case for c in CASES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_page_check_command_and_malformed_records(tmp_path, capsys):
    assert badinputs.main(["--check"]) == 0 and "is current" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"case": "x"}]))
    with pytest.raises(ValueError, match="expected a JSON list of records"):
        badinputs.load(bad)
    row = dict.fromkeys(badinputs.FIELDS, "a")
    page = badinputs.render([dict(row, message="line one\nline two")])
    assert "line one\n\n    line two" in page and page.count("* - ") == 2  # header + one row
    page = badinputs.render([dict(row, message="folder <tmp> & file <n> bytes")])
    assert "folder &lt;tmp&gt; &amp; file &lt;n&gt; bytes" in page  # shown, not eaten as HTML
    assert "<tmp>" not in page.split("## ")[-1]

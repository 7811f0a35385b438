"""The MedKLIP-style baseline (issue #18): its losses against slow loop references, the
``positions`` data field, reproducible negatives, and one tiny run through the store."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unichest_lib.baselines import medklip
from unichest_lib.config import ConfigError, resolve
from unichest_lib.data import collate, report_filter
from unichest_lib.data.positions import POSITIONS, canonical_position, position_index

from helpers import synth

CLASSES = ("atelectasis", "pleural effusion", "cardiomegaly", "pneumothorax", "edema")


# ---- losses against loop references -----------------------------------------------------
def _existence_ref(logits, labels, mask):
    total, n = 0.0, 0
    for b in range(logits.shape[0]):
        for k in range(logits.shape[1]):
            if mask[b, k]:
                p = 1 / (1 + math.exp(-float(logits[b, k])))
                y = float(labels[b, k])
                total += -(y * math.log(p) + (1 - y) * math.log(1 - p))
                n += 1
    return total / n if n else 0.0


def test_existence_loss_matches_a_loop_and_ignores_masked_entries():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g) * 2
    labels = (torch.rand(6, 5, generator=g) < 0.4).float()
    mask = torch.rand(6, 5, generator=g) < 0.6
    got = medklip.existence_loss(logits, labels, mask)
    assert got.item() == pytest.approx(_existence_ref(logits, labels, mask), rel=1e-5)
    changed = logits.clone()
    changed[~mask] = 50.0  # a masked logit, however wrong, changes nothing
    same = medklip.existence_loss(changed, labels, mask)
    assert same.item() == pytest.approx(got.item(), rel=1e-6)
    none = medklip.existence_loss(logits, labels, torch.zeros_like(mask))
    assert none.item() == 0.0


def _position_ref(logits, positions, noise, n):
    """Per sample and entity: the n positions of smallest noise other than the true one are the
    negatives; -log softmax of the true one among them; the mean over known entries."""
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        for k in range(logits.shape[1]):
            t = int(positions[b, k])
            if t < 0:
                continue
            others = sorted((float(noise[b, k, j]), j) for j in range(noise.shape[-1]) if j != t)
            cand = [t] + [j for _, j in others[:n]]
            z = [float(logits[b, k, j]) for j in cand]
            m = max(z)
            total += -(z[0] - (m + math.log(sum(math.exp(v - m) for v in z))))
            count += 1
    return total / count if count else 0.0


def test_position_loss_matches_a_loop_with_the_same_negatives():
    g = torch.Generator().manual_seed(1)
    b, c, p = 5, 4, len(POSITIONS)
    logits = torch.randn(b, c, p, generator=g) * 3
    noise = torch.rand(b, c, p, generator=g)
    positions = torch.randint(0, p, (b, c), generator=g)
    positions[torch.rand(b, c, generator=g) < 0.4] = -1
    positions[0] = -1  # a sample with no known position
    for n in (7, 1, p + 3):
        got = medklip.position_loss(logits, positions, noise, n)
        assert got.item() == pytest.approx(_position_ref(logits, positions, noise, min(n, p - 1)),
                                           rel=1e-5)
    neg = medklip.sample_negatives(noise, positions, 7)
    assert neg.shape == (b, c, 7)
    known = positions >= 0
    assert not (neg == positions.unsqueeze(-1))[known].any()  # never the true position
    assert all(len(set(row.tolist())) == 7 for row in neg.reshape(-1, 7))  # no repeats
    # an entry of unknown position contributes nothing, whatever its logits
    changed = logits.clone()
    changed[~known] = torch.randn_like(changed[~known]) * 100
    assert medklip.position_loss(changed, positions, noise, 7).item() == pytest.approx(
        medklip.position_loss(logits, positions, noise, 7).item(), rel=1e-6)


def test_a_batch_without_known_positions_gives_a_zero_position_term_not_nan():
    logits = torch.randn(3, 4, len(POSITIONS), requires_grad=True)
    positions = torch.full((3, 4), -1)
    loss = medklip.position_loss(logits, positions, torch.rand(3, 4, len(POSITIONS)), 7)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_conquer_loss_sums_the_terms_with_the_position_weight():
    cfg = resolve("smoke", method="medklip", method_options=("position=0.5", "negatives=3"))
    g = torch.Generator().manual_seed(2)
    out = {"logits": torch.randn(2, 3, generator=g),
           "position_logits": torch.randn(2, 3, len(POSITIONS), generator=g),
           "position_noise": torch.rand(2, 3, len(POSITIONS), generator=g)}
    batch = {"labels": torch.tensor([[1.0, 0, 1], [0, 1, 0]]),
             "mask": torch.ones(2, 3, dtype=torch.bool),
             "positions": torch.tensor([[4, -1, 10], [-1, -1, -1]])}
    terms = medklip.conquer_loss(out, batch, cfg)
    assert set(terms) == {"existence_loss", "position_loss", "loss"}
    want = medklip.position_loss(out["position_logits"], batch["positions"],
                                 out["position_noise"], 3)
    assert terms["position_loss"].item() == pytest.approx(want.item())
    assert terms["loss"].item() == pytest.approx(terms["existence_loss"].item() + 0.5 * want.item())


# ---- the positions data field -----------------------------------------------------------
REPORT = ("FINDINGS: Right lower lobe atelectasis. Small left pleural effusion. "
          "No pneumothorax. Heart size is normal. Bibasilar edema.")


def test_positions_of_a_hand_written_report_match_its_triplets():
    triplets = report_filter.extract(REPORT)
    row = position_index(REPORT, CLASSES)
    want = [-1] * len(CLASSES)
    for t in triplets:
        pos = canonical_position(t.position)
        if t.exists and pos and want[CLASSES.index(t.entity)] < 0:
            want[CLASSES.index(t.entity)] = POSITIONS.index(pos)
    assert row == want
    named = dict(zip(CLASSES, [POSITIONS[i] if i >= 0 else None for i in row]))
    assert named == {"atelectasis": "right lower", "pleural effusion": "left",
                     "cardiomegaly": None, "pneumothorax": None, "edema": "bilateral basal"}
    # the filtered text the pre-training sees gives the same positions as the raw report
    assert position_index(report_filter.report_to_text(REPORT), CLASSES) == row


def test_canonical_positions_cover_the_filters_phrases():
    assert len(set(POSITIONS)) == len(POSITIONS) == 47 and "" not in POSITIONS
    assert canonical_position("left base") == "left basal"
    assert canonical_position("right mid zone") == "right middle"
    assert canonical_position("bilateral") == "bilateral"
    assert canonical_position("lung") == "" and canonical_position("") == ""


def test_samples_carry_positions_and_label_only_texts_give_minus_one():
    ds = synth(("chestxray14", "vindr"), 6, 8, 0)  # label-concatenation texts only
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["positions"].dtype == torch.int64
    assert batch["positions"].shape == (len(ds), len(ds.classes))
    assert (batch["positions"] == -1).all()
    ds.table.texts[0] = REPORT  # a report row gets its positions
    j = ds.classes.index("atelectasis")
    assert int(ds[0]["positions"][j]) == POSITIONS.index("right lower")


# ---- the model ----------------------------------------------------------------------------
def _model(**kw):
    cfg = resolve("smoke", method="medklip", image_size=32, **kw)
    return cfg, medklip.build_model(cfg, CLASSES)


def test_the_decoder_pass_matches_the_query_networks_and_construction_is_seeded():
    cfg, m = _model(dropout=0.0)
    m2 = medklip.build_model(cfg, CLASSES)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    m.eval()
    q, patches = torch.randn(5, 64), torch.randn(2, 4, 64)
    pos = torch.randn(4, 64)
    s, a = m.decoder(q, patches, pos, need_weights=True)
    s2, a2, tokens = medklip.decode(m.decoder, q, patches, pos, True)
    assert torch.allclose(s, s2) and torch.allclose(a, a2) and tokens.shape == (2, 1, 5, 64)
    assert m.cfg.query_text == "description" and m.query_entries()[0] != "atelectasis"
    with pytest.raises(ConfigError):
        _model(query_text="ensemble")


def test_negative_noise_is_seeded_by_the_step_and_advances_only_in_training():
    _, m = _model()
    x = torch.rand(2, 1, 32, 32)
    m.eval()
    a = m(x, texts=["t", "t"])["position_noise"]
    assert torch.equal(a, m(x, texts=["t", "t"])["position_noise"]) and int(m.position_step) == 0
    m.train()
    first = m(x, texts=["t", "t"])["position_noise"]
    second = m(x, texts=["t", "t"])["position_noise"]
    assert torch.equal(first, a) and not torch.equal(first, second) and int(m.position_step) == 2
    _, again = _model()
    again.position_step.fill_(1)  # a resumed run (the step is in the checkpoint) draws the same
    assert torch.equal(again.train()(x, texts=["t", "t"])["position_noise"], second)
    assert "position_step" in m.state_dict()


# ---- end to end through the store (smoke) ------------------------------------------------
@pytest.mark.slow
def test_a_medklip_run_through_the_store_evaluates_and_grounds(tmp_path):
    from unichest_lib.evaluation import classification, grounding
    from unichest_lib.training import store

    cfg = resolve("smoke", method="medklip", max_steps_per_epoch=2, cache_dir=str(tmp_path),
                  sources="mimic,chestxray14", val_source="chestxray14", image_size=32,
                  n_per_source=32, n_downstream=16, n_valid=16, n_test=32, amp=False)
    model = store.load_model(cfg, "conquer", progress=False)
    assert isinstance(model, medklip.MedKLIP) and model.stage == "conquer"
    hist = store.history(cfg, "conquer", progress=False)
    train = hist[hist["split"] == "train"]
    assert len(train) == 2 and np.isfinite(train["existence_loss"]).all()
    assert (train["position_loss"] > 0).any()  # the MIMIC-like reports carry positions
    assert int(model.position_step) == 2
    ind = classification.in_domain(model, cfg)
    zs = classification.zero_shot(model, cfg, ("padchest",), by="description")
    for df in (ind, zs):
        macro = df[(df["class"] == "macro") & (df["metric"] == "aAUC")]["value"]
        assert len(macro) and np.isfinite(macro).all()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        out = model(x, queries=model.class_queries(["nodule", "a small round spot"]),
                    return_attention=True)
    assert out["attention"].shape == (3, 1, 2, 1, 1) and out["logits"].shape == (3, 2)
    heat = grounding.grounding_heatmaps(model, x, ["nodule", "pneumothorax"], cfg, by="description")
    assert heat.shape == (3, 2, 32, 32) and torch.isfinite(heat).all()
    with pytest.raises(ConfigError):
        store.divide_checkpoint(cfg, progress=False)

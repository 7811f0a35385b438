"""CLIP- and MGCA-style baselines: each loss against a slow loop, balanced Sinkhorn codes, the
prompt score by hand, and one tiny run of each through the store."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unichest_lib.baselines import clip, mgca
from unichest_lib.config import ConfigError, resolve


def _cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


# ---- losses against loops ----------------------------------------------------------------------
def test_clip_loss_matches_a_loop_over_pairs():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    s = torch.tensor(math.log(1 / 0.07))
    m = len(img)
    total = 0.0
    for i in range(m):
        li = [math.exp(s) * _cos(img[i], txt[k]) for k in range(m)]
        lt = [math.exp(s) * _cos(txt[i], img[k]) for k in range(m)]
        total += -(li[i] - math.log(sum(math.exp(v) for v in li)))
        total += -(lt[i] - math.log(sum(math.exp(v) for v in lt)))
    assert clip.clip_loss(img, txt, s).item() == pytest.approx(total / (2 * m), abs=1e-5)
    with pytest.raises(ValueError, match="shape"):
        clip.clip_loss(img, txt[:4], s)


def test_token_alignment_matches_a_loop_and_ignores_padding():
    g = torch.Generator().manual_seed(1)
    own, cross = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    tau = 0.07
    total, n = 0.0, 0
    for i in range(2):
        real = [k for k in range(4) if mask[i, k]]
        for j in real:
            a = [_cos(own[i, j], cross[i, k]) / tau for k in real]
            b = [_cos(cross[i, j], own[i, k]) / tau for k in real]
            jj = real.index(j)
            lse = lambda v: max(v) + math.log(sum(math.exp(x - max(v)) for x in v))  # noqa: E731
            total += (-(a[jj] - lse(a)) - (b[jj] - lse(b))) / 2
            n += 1
    got = mgca.token_alignment(own, cross, mask, tau)
    assert got.item() == pytest.approx(total / n, rel=1e-5)
    changed = own.clone()
    changed[1, 3] += 100.0  # a padding token: not a candidate, not an anchor
    assert mgca.token_alignment(changed, cross, mask, tau).item() == pytest.approx(got.item())
    full = mgca.token_alignment(own, cross, None, tau)  # no mask: every token is real
    assert full.item() != pytest.approx(got.item())


def test_sinkhorn_codes_are_balanced_over_prototypes_and_carry_no_gradient():
    g = torch.Generator().manual_seed(2)
    v = F.normalize(torch.randn(64, 16, generator=g), dim=-1)
    c = F.normalize(torch.randn(8, 16, generator=g), dim=-1)
    scores = (v @ c.T).requires_grad_(True)  # cosine similarities, as in MGCA and SwAV
    q = mgca.sinkhorn(scores, iters=50)
    assert q.shape == (64, 8) and not q.requires_grad
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-5)  # each sample: one unit
    assert torch.allclose(q.sum(0), torch.full((8,), 64 / 8), rtol=0.01)  # equipartition

    def spread(codes):  # the largest deviation of a prototype's mass from B/K
        return float((codes.sum(0) - 64 / 8).abs().max())

    hard = F.one_hot(scores.argmax(1), 8).float()
    assert spread(mgca.sinkhorn(scores)) < 0.05 * 8 < spread(hard)  # the default iterations
    assert spread(mgca.sinkhorn(scores, iters=3)) > spread(hard)  # SwAV's 3 are too few here
    # every sample closest to prototype 0: the codes still spread the mass
    skewed = F.normalize(c[0] + 0.3 * torch.randn(64, 16, generator=g), dim=-1) @ c.T
    assert (skewed.argmax(1) == 0).float().mean() > 0.9
    qs = mgca.sinkhorn(skewed, iters=50)
    assert spread(qs) < 0.1 and (qs.argmax(1) == 0).float().mean() < 0.5


def test_prototype_alignment_matches_a_loop_of_swapped_predictions():
    g = torch.Generator().manual_seed(3)
    v, t, c = (torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g),
               torch.randn(4, 5, generator=g))
    cn = F.normalize(c, dim=-1)
    sv, st = F.normalize(v, dim=-1) @ cn.T, F.normalize(t, dim=-1) @ cn.T
    qv, qt = mgca.sinkhorn(sv), mgca.sinkhorn(st)
    tau = mgca.TAU_CPA
    total = 0.0
    for i in range(6):
        pv = torch.softmax(sv[i] / tau, 0)
        pt = torch.softmax(st[i] / tau, 0)
        total -= sum(float(qt[i, k] * torch.log(pv[k])) for k in range(4))
        total -= sum(float(qv[i, k] * torch.log(pt[k])) for k in range(4))
    assert mgca.prototype_alignment(v, t, c).item() == pytest.approx(total / 12, rel=1e-5)


# ---- the models ----------------------------------------------------------------------------------
def _cfg(method, **kw):
    return resolve("smoke", method=method, image_size=32, amp=False, **kw)


def test_clip_score_is_the_positive_minus_the_negative_prompt_by_hand():
    model = clip.build_model(_cfg("clip"), ("nodule", "mass")).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = model(x, queries=model.class_queries(["nodule", "tuberculosis"]))
        img = out["image_emb"][1]
        pos = model.text_encoder(["tuberculosis"])[0]
        neg = model.text_encoder(["no tuberculosis"])[0]
    want = math.exp(model.logit_scale.item()) * (_cos(img, pos) - _cos(img, neg))
    assert out["logits"].shape == (2, 2)
    assert out["logits"][1, 1].item() == pytest.approx(want, abs=1e-4)
    with pytest.raises(ValueError, match="no class attention"):
        model(x, return_attention=True)


def test_models_are_seeded_and_mgca_freezes_its_temperature():
    a = mgca.build_model(_cfg("mgca", method_options=("prototypes=8",)), ("nodule", "mass"))
    b = mgca.build_model(_cfg("mgca", method_options=("prototypes=8",)), ("nodule", "mass"))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    assert a.prototypes.shape == (8, 64) and not a.logit_scale.requires_grad
    assert a.logit_scale.item() == pytest.approx(math.log(10))
    c = clip.build_model(_cfg("clip"), ("nodule",))
    assert c.logit_scale.requires_grad
    c.logit_scale.data.fill_(10.0)
    c.clamp_logit_scale_()
    assert c.logit_scale.item() == pytest.approx(math.log(100))


def test_mgca_loss_weights_come_from_the_method_options():
    cfg = _cfg("mgca", method_options=("global=1", "local=0.5", "proto=0", "prototypes=4"))
    model = mgca.build_model(cfg, ("nodule", "mass"))
    x = torch.rand(4, 1, 32, 32)
    texts = ["left nodule", "no finding", "mass [SEP] nodule", "right basal atelectasis"]
    out = model(x, texts)
    terms = mgca.conquer_loss(out, {}, cfg)
    assert set(terms) == {"ita_loss", "cta_loss", "cpa_loss", "loss"}
    assert terms["loss"].item() == pytest.approx(
        terms["ita_loss"].item() + 0.5 * terms["cta_loss"].item(), rel=1e-6)
    terms["loss"].backward()
    assert model.patch_to_text.in_proj_weight.grad is not None
    with pytest.raises(ConfigError, match="prototypes"):
        resolve("smoke", method="mgca", method_options=("protos=3",))


# ---- through the store -------------------------------------------------------------------------
@pytest.mark.parametrize("method, cls", [("clip", clip.CLIPStyle), ("mgca", mgca.MGCAStyle)])
def test_a_run_through_the_store_evaluates(method, cls, tmp_path):
    from unichest_lib.evaluation import classification
    from unichest_lib.training import checkpoints, store

    cfg = resolve("smoke", method=method, max_steps_per_epoch=2, cache_dir=str(tmp_path),
                  sources="mimic,chestxray14", val_source="chestxray14", image_size=32,
                  n_per_source=32, n_downstream=16, n_valid=16, n_test=32, amp=False)
    model = store.load_model(cfg, "conquer", progress=False)
    assert type(model) is cls and model.stage == "conquer"
    hist = store.history(cfg, "conquer", progress=False)
    train = hist[hist["split"] == "train"]
    assert len(train) == 2 and np.isfinite(train["loss"]).all()
    assert hist.loc[hist["split"] == "valid", "train_seconds"].gt(0).all()
    ind = classification.in_domain(model, cfg)
    zs = classification.zero_shot(model, cfg, ("padchest",), by="name")
    for df in (ind, zs):
        macro = df[(df["class"] == "macro") & (df["metric"] == "aAUC")]["value"]
        assert len(macro) and np.isfinite(macro).all()
    with pytest.raises(ConfigError, match="baseline"):
        store.divide_checkpoint(cfg, progress=False)
    other = "mgca" if method == "clip" else "clip"
    with pytest.raises(checkpoints.CheckpointError, match="method"):
        checkpoints.load(store.conquer_checkpoint(cfg, progress=False), cfg.replace(method=other))

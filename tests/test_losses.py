"""The losses of Eqs. 3-7 against slow, obvious per-sample / per-pair references."""

import math

import numpy as np
import pytest
import torch

from unichest_lib import resolve
from unichest_lib.training import losses as L


@pytest.fixture(autouse=True)
def _seeded():
    """Every test draws the same numbers whichever tests ran before it."""
    torch.manual_seed(0)


# ---- slow references (float64, Python loops, straight from the equations) -------------
def ref_bcl(img, txt, tau, variant, log_scale=None):
    m = img.shape[0]
    if variant in ("paper", "learnable"):
        img = img / img.norm(dim=1, keepdim=True)
        txt = txt / txt.norm(dim=1, keepdim=True)
        scale = 1.0 / tau if variant == "paper" else min(math.exp(log_scale), 100.0)
    else:
        scale = math.log(1 / 0.07)
    total = 0.0
    for i in range(m):
        row_i2t = [scale * float(img[i] @ txt[j]) for j in range(m)]
        row_t2i = [scale * float(txt[i] @ img[j]) for j in range(m)]
        i2t = -(row_i2t[i] - math.log(sum(math.exp(v) for v in row_i2t)))
        t2i = -(row_t2i[i] - math.log(sum(math.exp(v) for v in row_t2i)))
        total += 0.5 * (i2t + t2i) if variant == "code" else (i2t + t2i)
    return total / m


def ref_asl(x, y, mask, gn, gp, clip, eps, reduction):
    total, n = 0.0, 0
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            if not mask[i, c]:
                continue
            p = 1 / (1 + math.exp(-float(x[i, c])))
            if y[i, c] > 0.5:
                term = -((1 - p) ** gp) * math.log(max(p, eps))
            else:
                pm = max(p - clip, 0.0)
                term = -(pm ** gn) * math.log(max(1 - pm, eps))
            total += term
            n += 1
    return total / max(n, 1) if reduction == "mean" else total


def ref_scl(z, src, tau, variant):
    m = z.shape[0]
    z = z / z.norm(dim=1, keepdim=True)
    s = [[float(z[i] @ z[j]) / tau for j in range(m)] for i in range(m)]
    losses = []
    for i in range(m):
        denom = sum(math.exp(s[i][k]) for k in range(m) if k != i)
        partners = [j for j in range(m) if j != i and src[j] == src[i]]
        if not partners:
            continue
        if variant == "paper":
            losses.append(-math.log(sum(math.exp(s[i][j]) for j in partners) / denom))
        else:
            losses.extend(-math.log(math.exp(s[i][j]) / denom) for j in partners)
    return sum(losses) / len(losses) if losses else 0.0


# ---- L_BCL (Eq. 3) -----------------------------------------------------------------------
@pytest.mark.parametrize("variant,tau", [("paper", 1.0), ("paper", 0.1), ("code", 1.0)])
def test_bcl_matches_per_sample_reference(variant, tau):
    img, txt = torch.randn(9, 16, dtype=torch.float64), torch.randn(9, 16, dtype=torch.float64)
    got = L.bcl_loss(img, txt, tau, variant)
    assert got.item() == pytest.approx(ref_bcl(img, txt, tau, variant), abs=1e-5)


@pytest.mark.parametrize("log_scale", [0.0, math.log(1 / 0.07), 3.9, math.log(100) + 2.0])
def test_learnable_bcl_matches_per_sample_reference_with_its_scale_clamped(log_scale):
    img, txt = torch.randn(7, 12, dtype=torch.float64), torch.randn(7, 12, dtype=torch.float64)
    s = torch.tensor(log_scale, dtype=torch.float64)
    got = L.bcl_loss(img, txt, variant="learnable", logit_scale=s)
    assert got.item() == pytest.approx(ref_bcl(img, txt, 1.0, "learnable", log_scale), abs=1e-4)
    # a log-scale of 0 is the paper's tau = 1; past log 100 the scale is 100 whatever s is
    if log_scale == 0.0:
        assert got.item() == pytest.approx(L.bcl_loss(img, txt, 1.0, "paper").item(), abs=1e-6)
    if log_scale > math.log(100):
        at_bound = L.bcl_loss(img, txt, variant="learnable",
                              logit_scale=torch.tensor(math.log(100)))
        assert got.item() == pytest.approx(at_bound.item(), abs=1e-5)


def test_learnable_bcl_sends_its_gradient_to_the_scale_and_none_past_the_clamp():
    img, txt = torch.randn(8, 16), torch.randn(8, 16)
    txt = img + 0.5 * txt  # partly aligned: a sharper scale lowers the loss
    s = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    L.bcl_loss(img, txt, variant="learnable", logit_scale=s).backward()
    h = 1e-3  # central difference against the autograd value
    num = (L.bcl_loss(img, txt, variant="learnable", logit_scale=s.detach() + h)
           - L.bcl_loss(img, txt, variant="learnable", logit_scale=s.detach() - h)) / (2 * h)
    assert s.grad is not None and s.grad.item() != 0.0
    assert s.grad.item() == pytest.approx(num.item(), rel=1e-2, abs=1e-4)
    past = torch.tensor(math.log(100) + 1.0, requires_grad=True)
    L.bcl_loss(img, txt, variant="learnable", logit_scale=past).backward()
    assert past.grad.item() == 0.0


def test_learnable_bcl_needs_a_scalar_scale_and_conquer_loss_reads_it_from_the_model_output():
    with pytest.raises(ValueError, match="needs logit_scale"):
        L.bcl_loss(torch.randn(3, 4), torch.randn(3, 4), variant="learnable")
    with pytest.raises(ValueError, match="needs logit_scale"):
        L.bcl_loss(torch.randn(3, 4), torch.randn(3, 4), variant="learnable",
                   logit_scale=torch.zeros(2))
    cfg = resolve("smoke", bcl_variant="learnable")
    out, batch = _out_and_batch()
    out["bcl_logit_scale"] = torch.tensor(2.0, requires_grad=True)
    terms = L.conquer_loss(out, batch, cfg)
    want = L.bcl_loss(out["image_emb"], out["text_emb"], variant="learnable",
                      logit_scale=out["bcl_logit_scale"])
    assert terms["bcl_loss"].item() == pytest.approx(want.item())
    terms["loss"].backward()
    assert out["bcl_logit_scale"].grad is not None


@pytest.mark.parametrize("variant", ["paper", "code", "learnable"])
def test_bcl_chance_is_the_loss_of_uninformative_logits(variant):
    m = 6
    same = torch.ones(m, 4)  # every pair equally similar: every logit equal
    got = L.bcl_loss(same, same, 1.0, variant, logit_scale=torch.tensor(1.0))
    assert L.bcl_chance(variant, m) == pytest.approx(got.item(), abs=1e-5)
    assert L.bcl_chance(variant, m) == pytest.approx((1 if variant == "code" else 2) * math.log(m))
    with pytest.raises(ValueError, match="M >= 2"):
        L.bcl_chance(variant, 1)


def test_bcl_is_small_when_pairs_align_and_large_when_shuffled():
    img = torch.randn(16, 32)
    aligned = L.bcl_loss(img, img, 0.05)
    shuffled = L.bcl_loss(img, img[torch.randperm(16)], 0.05)
    assert aligned < 0.1 < shuffled


# ---- ASL / BCE on observed classes ---------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("gn,gp,clip", [(6.0, 0.0, 0.05), (4.0, 1.0, 0.0), (0.0, 0.0, 0.0)])
def test_asl_matches_per_element_reference(reduction, gn, gp, clip):
    x = 3 * torch.randn(8, 7, dtype=torch.float64)
    y = (torch.rand(8, 7) < 0.4).double()
    mask = torch.rand(8, 7) < 0.7
    got = L.asl_loss(x, y, mask, gamma_neg=gn, gamma_pos=gp, clip=clip, reduction=reduction)
    want = ref_asl(x, y, mask, gn, gp, clip, 1e-8, reduction)
    assert got.item() == pytest.approx(want, rel=1e-6, abs=1e-6)


def test_asl_without_focusing_or_clip_is_bce():
    x, y = torch.randn(6, 5), (torch.rand(6, 5) < 0.5).float()
    mask = torch.rand(6, 5) < 0.8
    a = L.asl_loss(x, y, mask, gamma_neg=0, gamma_pos=0, clip=0)
    b = L.masked_bce_loss(x, y, mask)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


def test_bce_is_the_mean_over_observed_elements_only():
    """Also the fine-tuning loss of the transfer evaluation (paper Table II)."""
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, False], [True, True]])
    ref = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(0.5)), np.log1p(np.exp(-3.0))])
    assert L.masked_bce_loss(logits, labels, mask).item() == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("fn", [L.asl_loss, L.masked_bce_loss])
def test_missing_classes_receive_exactly_zero_gradient(fn):
    x = torch.randn(10, 6, requires_grad=True)
    y = (torch.rand(10, 6) < 0.5).float()
    mask = torch.rand(10, 6) < 0.5
    mask[0, 0] = True
    fn(x, y, mask).backward()
    assert torch.all(x.grad[~mask] == 0)
    assert torch.any(x.grad[mask] != 0)
    # a missing label's value must not matter either
    y2 = y.clone()
    y2[~mask] = 1 - y2[~mask]
    assert fn(x, y2, mask).item() == pytest.approx(fn(x, y, mask).item())


def test_asl_does_not_change_global_grad_mode():
    assert torch.is_grad_enabled()
    L.asl_loss(torch.randn(3, 3), torch.ones(3, 3))
    assert torch.is_grad_enabled()
    with torch.no_grad():
        L.asl_loss(torch.randn(3, 3), torch.ones(3, 3))
        assert not torch.is_grad_enabled()


def test_asl_with_nothing_observed_is_zero_not_nan():
    x = torch.randn(4, 3, requires_grad=True)
    loss = L.asl_loss(x, torch.ones(4, 3), torch.zeros(4, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0 and torch.all(x.grad == 0)


# ---- L_SCL (Eq. 6) -------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["paper", "outside"])
@pytest.mark.parametrize("tau", [1.0, 0.2])
def test_scl_matches_per_pair_reference(variant, tau):
    z = torch.randn(20, 8, dtype=torch.float64)
    src = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 1, 0, 2, 4, 5, 5, 0, 1, 2, 6])  # 4, 6 alone
    got = L.scl_loss(z, src, tau, variant)
    assert got.item() == pytest.approx(ref_scl(z, src, tau, variant), abs=1e-6)


def test_scl_variants_differ_when_sources_are_unbalanced():
    z = torch.randn(12, 8, dtype=torch.float64)
    src = torch.tensor([0] * 8 + [1, 1, 2, 2])
    assert abs(L.scl_loss(z, src, variant="paper") - L.scl_loss(z, src, variant="outside")) > 1e-3


@pytest.mark.parametrize("variant", ["paper", "outside"])
def test_scl_without_any_partner_is_zero_with_gradient(variant):
    z = torch.randn(5, 4, requires_grad=True)
    loss = L.scl_loss(z, torch.arange(5), variant=variant)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()
    one = torch.randn(1, 4, requires_grad=True)
    assert L.scl_loss(one, torch.zeros(1, dtype=torch.long)).requires_grad


def test_scl_is_lower_when_projections_cluster_by_source():
    src = torch.arange(4).repeat_interleave(8)
    centres = torch.eye(4, 8) * 5
    clustered = centres[src] + 0.1 * torch.randn(32, 8)
    mixed = torch.randn(32, 8)
    assert L.scl_loss(clustered, src, 0.2) < L.scl_loss(mixed, src, 0.2)


def test_scl_gradient_is_finite_with_lonely_anchors():
    z = torch.randn(6, 4, requires_grad=True)
    L.scl_loss(z, torch.tensor([0, 0, 1, 2, 3, 4]), 0.1).backward()
    assert torch.isfinite(z.grad).all()


# ---- Eq. 5 ------------------------------------------------------------------------------------
def test_combine_scores_is_eq5_on_scores():
    s1, sk = torch.randn(4, 6), torch.randn(4, 3, 6)
    gate = torch.softmax(torch.randn(4, 3), -1)
    got = L.combine_scores(s1, sk, gate, 0.3)
    want = torch.stack([0.3 * s1[b] + 0.7 * sum(gate[b, k] * sk[b, k] for k in range(3))
                        for b in range(4)])
    assert torch.allclose(got, want, atol=1e-6)


def test_combine_probabilities_returns_logit_of_the_probability_mix():
    s1, sk = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 3, 6, dtype=torch.float64)
    gate = torch.softmax(torch.randn(4, 3, dtype=torch.float64), -1)
    got = L.combine_scores(s1, sk, gate, 0.4, "probabilities")
    p = 0.4 * torch.sigmoid(s1) + 0.6 * (gate[..., None] * torch.sigmoid(sk)).sum(1)
    assert torch.allclose(torch.sigmoid(got), p, atol=1e-9)


def test_lam_one_makes_s_all_equal_s1():
    s1, sk = torch.randn(4, 6), torch.randn(4, 3, 6)
    gate = torch.softmax(torch.randn(4, 3), -1)
    assert torch.equal(L.combine_scores(s1, sk, gate, 1.0), s1)
    assert torch.allclose(L.combine_scores(s1, sk, gate, 1.0, "probabilities"), s1, atol=1e-4)


# ---- Eqs. 4 and 7 -------------------------------------------------------------------------
def _out_and_batch(m=8, c=5, d=16, k=3, divide=False):
    out = {"image_emb": torch.randn(m, d, requires_grad=True),
           "text_emb": torch.randn(m, d, requires_grad=True),
           "logits": torch.randn(m, c, requires_grad=True)}
    if divide:
        out["gate_proj"] = torch.randn(m, 32, requires_grad=True)
    batch = {"labels": (torch.rand(m, c) < 0.4).float(), "mask": torch.rand(m, c) < 0.7,
             "source": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])[:m]}
    return out, batch


def test_conquer_loss_is_bcl_plus_multilabel_eq4():
    cfg = resolve("smoke")
    out, batch = _out_and_batch()
    terms = L.conquer_loss(out, batch, cfg)
    assert set(terms) == {"bcl_loss", "multilabel_loss", "loss"}
    want = L.bcl_loss(out["image_emb"], out["text_emb"]) + L.asl_loss(
        out["logits"], batch["labels"], batch["mask"])
    assert terms["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    cfg_bce = resolve("smoke", multilabel_loss="bce")
    assert L.conquer_loss(out, batch, cfg_bce)["multilabel_loss"].item() == pytest.approx(
        L.masked_bce_loss(out["logits"], batch["labels"], batch["mask"]).item())


def test_divide_loss_is_eq7_and_bcl_carries_no_gradient():
    cfg = resolve("smoke")
    out, batch = _out_and_batch(divide=True)
    terms = L.divide_loss(out, batch, cfg)
    assert set(terms) == {"bcl_loss", "multilabel_loss", "scl_loss", "loss"}
    total = terms["bcl_loss"] + terms["multilabel_loss"] + terms["scl_loss"]
    assert terms["loss"].item() == pytest.approx(total.item())
    assert not terms["bcl_loss"].requires_grad
    terms["loss"].backward()
    assert out["image_emb"].grad is None and out["text_emb"].grad is None
    assert out["gate_proj"].grad is not None and out["logits"].grad is not None


def test_divide_loss_without_gate_has_zero_scl():
    out, batch = _out_and_batch()
    assert L.divide_loss(out, batch, resolve("smoke", K=1))["scl_loss"].item() == 0.0


def test_bad_variant_names_are_clear_errors():
    with pytest.raises(ValueError, match="bcl variant"):
        L.bcl_loss(torch.randn(2, 3), torch.randn(2, 3), variant="nope")
    with pytest.raises(ValueError, match="scl variant"):
        L.scl_loss(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), variant="nope")
    with pytest.raises(ValueError, match="reduction"):
        L.asl_loss(torch.randn(2, 3), torch.ones(2, 3), reduction="max")


def test_histories_logged_before_the_rename_read_with_todays_term_names():
    import pandas as pd

    old = pd.DataFrame({"step": [1], "bcl_loss": [0.6], "bce_loss": [0.02], "loss": [0.62]})
    new = L.current_term_names(old)
    assert list(new.columns) == ["step", "bcl_loss", "multilabel_loss", "loss"]
    assert L.current_term_names(new).equals(new)


# ---- ASL as the official code computes it (issue #18: the paper-vs-code appendix) ---------------
def test_asl_focal_weight_carries_no_gradient():
    """The focal weight (1 - p_t)^γ is a constant for the gradient, as in the official code:
    the gradient equals the reference's with the weight detached, not with it differentiated."""
    x = (3 * torch.randn(6, 5, dtype=torch.float64)).requires_grad_()
    y = (torch.rand(6, 5) < 0.4).double()

    def ref(detach):
        p = torch.sigmoid(x)
        p_neg = (1 - p + 0.05).clamp(max=1.0)
        pt = p * y + p_neg * (1 - y)
        w = torch.pow(1 - pt, 1.0 * y + 4.0 * (1 - y))
        w = w.detach() if detach else w
        return -((y * torch.log(p) + (1 - y) * torch.log(p_neg)) * w).mean()

    got = torch.autograd.grad(L.asl_loss(x, y, gamma_neg=4.0, gamma_pos=1.0), x)[0]
    const = torch.autograd.grad(ref(True), x)[0]
    differentiated = torch.autograd.grad(ref(False), x)[0]
    assert torch.allclose(got, const, rtol=1e-5, atol=1e-7)  # the library computes in float32
    assert not torch.allclose(got, differentiated, atol=1e-4)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_asl_on_probabilities_matches_the_reference_on_their_logits(reduction):
    x = 3 * torch.randn(8, 7, dtype=torch.float64)
    y = (torch.rand(8, 7) < 0.4).double()
    mask = torch.rand(8, 7) < 0.7
    got = L.asl_loss_on_probabilities(torch.sigmoid(x), y, mask, reduction=reduction)
    assert got.item() == pytest.approx(ref_asl(x, y, mask, 6.0, 0.0, 0.05, 1e-8, reduction),
                                       rel=1e-6, abs=1e-9)


def test_probabilities_path_keeps_the_gradient_a_clipped_logit_loses():
    """Eq. 5 on probabilities: a saturated negative (p = 1 - 1e-9) has zero gradient through
    the logit clipped at 1e-6 but keeps one when ASL scores p itself."""
    cfg = resolve("smoke", combine="probabilities")
    p = torch.tensor([[1 - 1e-9, 0.3]], dtype=torch.float64, requires_grad=True)
    batch = {"labels": torch.tensor([[0.0, 1.0]]), "mask": torch.ones(1, 2, dtype=torch.bool)}
    via_logit = L.multilabel_loss(torch.logit(p, eps=1e-6), batch, cfg)
    g_logit = torch.autograd.grad(via_logit, p)[0]
    direct = L.multilabel_loss(torch.logit(p, eps=1e-6), batch, cfg, probs=p)
    g_direct = torch.autograd.grad(direct, p)[0]
    assert g_logit[0, 0] == 0 and g_direct[0, 0] > 0
    bce = L.multilabel_loss(p.detach(), batch, resolve("smoke", multilabel_loss="bce"), probs=p)
    want = -(math.log(1e-8) + math.log(0.3)) / 2  # clamped at 1e-8, mean over 2 elements
    assert bce.item() == pytest.approx(want, rel=1e-6)


def test_divide_loss_scores_the_models_probabilities_when_eq5_mixes_probabilities():
    cfg = resolve("smoke", combine="probabilities")
    out, batch = _out_and_batch(divide=True)
    out["probs"] = torch.sigmoid(out["logits"].detach()).requires_grad_()
    terms = L.divide_loss(out, batch, cfg)
    terms["loss"].backward()
    assert out["probs"].grad is not None and out["logits"].grad is None
    want = L.asl_loss_on_probabilities(out["probs"], batch["labels"], batch["mask"],
                                       reduction=cfg.loss_reduction)
    assert terms["multilabel_loss"].item() == pytest.approx(want.item())

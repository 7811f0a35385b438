"""UniChest model (Eqs. 1, 2, 5): shapes, stages, freezing, K and λ limits, batched experts."""

import math

import pytest
import torch
import torch.nn.functional as F

from unichest_lib import resolve
from unichest_lib.model import QueryNetworks, UniChest, count_parameters

CLASSES = ("atelectasis", "cardiomegaly", "pleural effusion", "pneumothorax", "no finding")
TEXTS = ["atelectasis", "cardiomegaly [SEP] pleural effusion", "no finding", "pneumothorax"]


def make(**over):
    cfg = resolve("smoke", **{"dropout": 0.0, **over})
    return UniChest(cfg, CLASSES)


@pytest.fixture(scope="module")
def conquer_model():
    """A smoke Conquer model shared by the tests that only read it."""
    return make()


@pytest.fixture(scope="module")
def divide_model():
    return make(K=3, scl_dim=8).start_divide()


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(1))


def test_conquer_forward_returns_the_documented_dict(images, conquer_model):
    m = conquer_model
    out = m(images, TEXTS, return_attention=True)
    b, c, d = 4, len(CLASSES), m.cfg.embed_dim
    assert out["patches"].shape == (b, 4, d)  # 64 px / stride 32 = 2x2 patches
    assert torch.allclose(out["image_emb"], out["patches"].mean(1))
    assert out["text_emb"].shape == (b, d)
    assert out["scores"].shape == (b, 1, c)
    assert torch.equal(out["logits"], out["scores"][:, 0])
    assert "gate" not in out and "gate_proj" not in out
    assert out["attention"].shape == (b, 1, c, 2, 2)
    assert torch.allclose(out["attention"].sum((-1, -2)), torch.ones(b, 1, c), atol=1e-5)


def test_divide_forward_adds_experts_gate_and_projection(images, divide_model):
    m = divide_model
    out = m(images, TEXTS, return_attention=True)
    assert out["scores"].shape == (4, 3, len(CLASSES))
    assert out["gate"].shape == (4, 2) and torch.allclose(out["gate"].sum(1), torch.ones(4))
    assert out["gate_proj"].shape == (4, 8)
    assert out["attention"].shape == (4, 3, len(CLASSES), 2, 2)
    s = out["scores"]
    want = m.cfg.lam * s[:, 0] + (1 - m.cfg.lam) * (out["gate"][..., None] * s[:, 1:]).sum(1)
    assert torch.allclose(out["logits"], want, atol=1e-5)  # Eq. 5


def test_k1_makes_divide_equal_to_conquer_only(images):
    m = make(K=1)
    m.eval()
    before = m(images)["logits"]
    m.start_divide()
    m.eval()
    out = m(images)
    assert m.experts is None and "gate" not in out
    assert torch.equal(out["logits"], out["scores"][:, 0])
    assert torch.allclose(out["logits"], before)


def test_lam1_makes_s_all_equal_s1(images):
    m = make(lam=1.0).start_divide()
    out = m(images)
    assert torch.allclose(out["logits"], out["scores"][:, 0])


def test_parameter_count_grows_linearly_with_k():
    models = {k: make(K=k) for k in (2, 3, 4)}
    counts = {k: count_parameters(m) for k, m in models.items()}
    m = models[2]
    one_qn = count_parameters(m.qn1)
    d, scl = m.cfg.embed_dim, m.cfg.scl_dim
    # one more expert = one query network + one gate row (d weights + 1 bias) + one Φ2 column
    assert counts[3] - counts[2] == counts[4] - counts[3] == one_qn + d + 1 + scl
    assert count_parameters(models[4].experts) == 3 * one_qn


def ref_query_network(qn, e, queries, patches, pos, n_heads):
    """Network e of a QueryNetworks stack, one sample at a time, plain per-head matmuls."""
    def lin(mod, x):
        return x @ mod.weight[e] + mod.bias[e]

    def norm(mod, x):
        return F.layer_norm(x, x.shape[-1:]) * mod.weight[e] + mod.bias[e]

    def mha(q, k, v):
        dh = q.shape[-1] // n_heads
        heads = []
        for h in range(n_heads):
            sl = slice(h * dh, (h + 1) * dh)
            w = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(dh), dim=-1)
            heads.append(w @ v[:, sl])
        return torch.cat(heads, dim=-1)

    rows = []
    for b in range(patches.shape[0]):
        t, mem = queries.clone(), patches[b]
        for layer in qn.layers:
            q, k, v = lin(layer.self_qkv, norm(layer.norm1, t)).chunk(3, dim=-1)
            t = t + lin(layer.self_out, mha(q, k, v))
            q = lin(layer.cross_q, norm(layer.norm2, t))
            t = t + lin(layer.cross_out, mha(q, lin(layer.cross_k, mem + pos), lin(layer.cross_v, mem)))
            t = t + lin(layer.ffn2, F.gelu(lin(layer.ffn1, norm(layer.norm3, t))))
        rows.append(lin(qn.head2, F.gelu(lin(qn.head1, norm(qn.norm, t)))).squeeze(-1))
    return torch.stack(rows)


@pytest.mark.parametrize("need_weights", [False, True])
def test_batched_experts_equal_a_loop_over_networks_and_samples(need_weights):
    torch.manual_seed(0)
    qn = QueryNetworks(3, 16, 4, 32, 2, dropout=0.0).double()
    qn.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():  # non-trivial norms and biases so every parameter matters
        for p in qn.parameters():
            p.add_(0.1 * torch.randn_like(p))
    queries, patches, pos = (torch.randn(5, 16, dtype=torch.float64),
                             torch.randn(2, 6, 16, dtype=torch.float64),
                             torch.randn(6, 16, dtype=torch.float64))
    scores, attn = qn(queries, patches, pos, need_weights=need_weights)
    assert scores.shape == (2, 3, 5)
    for e in range(3):
        want = ref_query_network(qn, e, queries, patches, pos, 4)
        assert torch.allclose(scores[:, e], want, atol=1e-9)
    if need_weights:
        assert attn.shape == (2, 3, 5, 6)


def test_experts_start_different_from_each_other(divide_model):
    m = divide_model
    w = m.experts.layers[0].cross_q.weight
    assert not torch.allclose(w[0], w[1])


def test_conquer_trains_encoders_and_qn1_only():
    m = make(K=3, freeze_text=True, n_decoder_layers=1)
    trainable = {id(p) for p in m.trainable_parameters()}
    assert all(id(p) in trainable for p in m.image_encoder.parameters())
    assert all(id(p) in trainable for p in m.qn1.parameters())
    assert all(id(p) in trainable for p in m.text_encoder.proj.parameters())
    for part in (m.experts, m.gate, m.scl_proj, m.text_encoder.backbone):
        assert not any(id(p) in trainable for p in part.parameters())
    m2 = make(K=3, freeze_text=False)
    assert all(p.requires_grad for p in m2.text_encoder.backbone.parameters())


def test_divide_really_freezes_encoders_through_training_steps(images):
    m = make(K=3).start_divide()
    m.train()
    assert not m.image_encoder.training and not m.text_encoder.training
    assert all(not mod.training for mod in m.image_encoder.modules())
    frozen = {k: v.clone() for k, v in m.image_encoder.state_dict().items()}
    frozen.update({"t." + k: v.clone() for k, v in m.text_encoder.state_dict().items()})
    qn1_before = m.qn1.head2.weight.clone()
    trainable = m.trainable_parameters()
    assert {id(p) for p in trainable} == {
        id(p) for mod in (m.qn1, m.experts, m.gate, m.scl_proj) for p in mod.parameters()}
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    labels = (torch.rand(4, len(CLASSES)) < 0.5).float()
    for _ in range(2):
        out = m(images, TEXTS)
        assert not out["patches"].requires_grad and not out["text_emb"].requires_grad
        loss = F.binary_cross_entropy_with_logits(out["logits"], labels) + out["gate_proj"].pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = dict(m.image_encoder.state_dict())
    after.update({"t." + k: v for k, v in m.text_encoder.state_dict().items()})
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)  # BN running stats included
    assert not torch.equal(qn1_before, m.qn1.head2.weight)


def test_zero_shot_queries_on_any_class_list(images, conquer_model):
    m = conquer_model
    m.eval()
    default = m(images)["logits"]
    explicit = m(images, queries=m.class_queries(CLASSES))["logits"]
    assert torch.allclose(default, explicit)
    p = m.predict_proba(images, ["tuberculosis", "scoliosis"])
    assert p.shape == (4, 2) and torch.all((p > 0) & (p < 1))
    # queries are per class, so a class's score does not depend on the other names
    p2 = m.predict_proba(images, ["scoliosis"])
    assert p2.shape == (4, 1)


def test_predict_proba_keeps_the_train_mode(images, conquer_model):
    m = conquer_model
    m.train()
    m.predict_proba(images)
    assert m.training


def test_frozen_text_backbone_encodes_each_string_once():
    m = make(freeze_text=True, K=1)
    calls = []
    orig = m.text_encoder._pool
    m.text_encoder._pool = lambda texts: calls.append(list(texts)) or orig(texts)
    a = m.encode_text(["edema", "mass", "edema"])
    b = m.encode_text(["mass", "nodule"])
    assert calls == [["edema", "mass"], ["nodule"]]
    assert torch.allclose(a[1], b[0])


def test_model_init_is_seeded(conquer_model):
    a, b, c = conquer_model, make(), make(seed=4)
    wa, wb, wc = (x.image_encoder.proj.weight for x in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert torch.equal(a.qn1.head1.weight, b.qn1.head1.weight)


def test_bad_inputs_raise_clear_errors(images, conquer_model):
    m = conquer_model
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        m(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="2 texts for 4 images"):
        m(images, TEXTS[:2])
    with pytest.raises(ValueError, match="queries must have shape"):
        m(images, queries=torch.randn(3, 7))
    with pytest.raises(TypeError, match="single str"):
        m.encode_text("edema")
    with pytest.raises(ValueError, match="duplicates"):
        UniChest(resolve("smoke"), ("edema", "edema"))


def test_loading_weights_invalidates_cached_queries(images):
    m = make(K=1).start_divide()
    q1 = m.class_queries().clone()
    state = m.state_dict()
    state["text_encoder.proj.weight"] = state["text_encoder.proj.weight"] * 2
    state["text_encoder.proj.bias"] = state["text_encoder.proj.bias"] * 2
    m.load_state_dict(state)
    assert torch.allclose(m.class_queries(), 2 * q1, atol=1e-5)


def test_bf16_autocast_forward_and_backward_are_finite(images, conquer_model):
    m = conquer_model
    m.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(images, TEXTS, return_attention=True)
    loss = out["logits"].float().sum() + out["text_emb"].float().pow(2).mean()
    loss.backward()
    grads = [p.grad for p in m.trainable_parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    m.zero_grad(set_to_none=True)


# ---- the official code's forms, as options (issue #18) ------------------------------------------
def test_gate_reads_the_patch_mean_or_the_mean_of_layer_normed_patches(images):
    torch.manual_seed(0)
    paper = make(K=3, scl_dim=8).start_divide().eval()
    official = make(K=3, scl_dim=8, gate_input="layernorm").start_divide().eval()
    official.load_state_dict(paper.state_dict())  # same weights, and no new parameters
    with torch.no_grad():
        a, b = paper(images, TEXTS), official(images, TEXTS)
        patches = a["patches"]
        want_a = torch.softmax(paper.gate(patches.mean(1)), -1)
        want_b = torch.softmax(paper.gate(F.layer_norm(patches, patches.shape[-1:]).mean(1)), -1)
    assert torch.allclose(a["gate"], want_a, atol=1e-6)
    assert torch.allclose(b["gate"], want_b, atol=1e-6)
    assert not torch.allclose(a["gate"], b["gate"], atol=1e-4)
    assert torch.equal(a["scores"], b["scores"])  # only the gate reads it


def test_probabilities_mode_returns_the_probability_mix_for_the_loss(images):
    m = make(K=3, scl_dim=8, combine="probabilities").start_divide()
    out = m(images, TEXTS)
    s = out["scores"].float()
    lam = m.cfg.lam
    p = lam * torch.sigmoid(s[:, 0]) + (1 - lam) * (out["gate"][..., None]
                                                    * torch.sigmoid(s[:, 1:])).sum(1)
    assert torch.allclose(out["probs"], p, atol=1e-6)
    assert torch.allclose(torch.sigmoid(out["logits"]), p, atol=1e-5)
    assert "probs" not in make(K=3, scl_dim=8).start_divide()(images, TEXTS)

"""Cost (paper Section V-A2): FLOPs are measured by fvcore, with our rules for the two
operators fvcore does not know, checked here against hand counts on tiny modules."""

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis

from unichest_lib.evaluation import cost
from unichest_lib.config import resolve


class _Bmm(torch.nn.Module):
    def forward(self, bias, a, b):
        return torch.baddbmm(bias, a, b)


class _Attn(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def _count(module, *inputs):
    fa = FlopCountAnalysis(module, inputs).set_op_handle(**cost.EXTRA_HANDLES)
    fa.unsupported_ops_warnings(False)
    return fa.total()


def test_baddbmm_rule_counts_multiply_adds():
    a, b = torch.rand(3, 5, 7), torch.rand(3, 7, 2)
    assert _count(_Bmm(), torch.zeros(3, 1, 2), a, b) == 3 * 5 * 7 * 2


def test_attention_rule_counts_both_matmuls():
    q, k, v = torch.rand(2, 4, 6, 8), torch.rand(2, 4, 10, 8), torch.rand(2, 4, 10, 3)
    assert _count(_Attn(), q, k, v) == 2 * 4 * (6 * 10 * 8 + 6 * 10 * 3)


@pytest.fixture(scope="module")
def smoke_table():
    return cost.cost_table(resolve("smoke", K=3), n_queries=5)


def test_moe_costs_more_than_conquer_only_and_params_add_up(smoke_table):
    conquer, full = smoke_table.iloc[0], smoke_table.iloc[1]
    assert list(smoke_table["K"]) == [1, 3] and (smoke_table["n_queries"] == 5).all()
    assert full["GMACs"] > conquer["GMACs"] > 0
    assert full["GFLOPs"] == pytest.approx(2 * full["GMACs"])
    # two experts, same shapes as QN1: their parameters are twice QN1's, plus gate/proj
    assert full["params_query_networks"] == 3 * conquer["params_query_networks"]
    cfg = resolve("smoke", K=3)
    assert full["params_gate"] == (cfg.embed_dim + 1) * 2 + (2 + 1) * cfg.scl_dim
    assert full["params_total"] - conquer["params_total"] == (
        2 * conquer["params_query_networks"] + full["params_gate"])
    # measured by fvcore: the same image encoder, and K query networks of equal shapes
    # cost exactly K times QN1
    assert full["GMACs_image_encoder"] == conquer["GMACs_image_encoder"] > 0
    assert full["GMACs_query_networks"] == pytest.approx(3 * conquer["GMACs_query_networks"])
    assert full["GMACs"] - conquer["GMACs"] >= 2 * conquer["GMACs_query_networks"] * (1 - 1e-9)
    assert "aten::baddbmm" not in full["uncounted_ops"]


def test_summary_shows_gflops_increase_and_millions_of_parameters(smoke_table):
    table = cost.summary(smoke_table)
    assert [m for _, m in table.index] == ["Conquer only", "UniChest (K=3)"]
    increase = smoke_table["GFLOPs_increase_pct"].iloc[1]
    assert table["vs Conquer"].tolist() == ["+0.0 %", f"{increase:+.1f} %"]
    assert table["total (M params)"].iloc[1] == round(smoke_table["params_total"].iloc[1] / 1e6, 2)

"""The LFM's computation: shapes of every named point, towers' inputs, heads, DCNv2, loss, STEM and Crocodile."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from lfm.config.model import EmbeddingVariant
from models.blocks import CrossLayer, CrossNet, Mlp
from models.encoders import OOV, CategoricalEncoder, FeatureEncoders, NumericEncoder
from models.lfm import LfmOutput, build_lfm, covariance_loss, fm_term, lfm_loss
from tests.support.tiny import tiny_config, tiny_table

VARIANTS = [v.value for v in EmbeddingVariant]


def _model(tmp_path, **model):
    cfg = tiny_config(tmp_path, **model)
    table = tiny_table()
    enc = FeatureEncoders.fit(table, cfg.schema, cfg.model)
    torch.manual_seed(0)
    return build_lfm(enc, cfg.schema, cfg.model), enc, table, cfg


def _inputs(enc, table, n=16):
    t = table.slice(0, n)
    return enc.encode_fields(t), enc.encode_scenario(t)


# ---- encoders ----

def test_categorical_encoder_oov_null_and_type_agnostic_keys():
    enc = CategoricalEncoder.fit("f", pa.array([3, 1, 1, None, 2]), min_count=1)
    assert enc.vocab == ["1", "2", "3"] and enc.cardinality == 4
    assert enc.encode(pa.array([1, 2, 3, 9, None])).tolist() == [1, 2, 3, OOV, OOV]
    assert enc.encode(pa.array([1.0, 3.0])).tolist() == [1, 3]  # a double 1.0 is the id "1"
    rare = CategoricalEncoder.fit("f", pa.array(["a", "a", "b"]), min_count=2)
    assert rare.encode(pa.array(["a", "b"])).tolist() == [1, OOV]


def test_numeric_encoder_quantile_buckets_and_missing():
    enc = NumericEncoder.fit("x", pa.array(np.arange(100, dtype=np.float64)), buckets=4)
    assert enc.boundaries == [24.75, 49.5, 74.25] and enc.cardinality == 5
    assert enc.encode(pa.array([0.0, 30.0, 60.0, 99.0, None, float("nan")])).tolist() == [1, 2, 3, 4, OOV, OOV]


def test_encoders_round_trip_through_json(tmp_path):
    _, enc, table, _ = _model(tmp_path)
    again = FeatureEncoders.from_dict(enc.to_dict())
    assert torch.equal(again.encode_fields(table), enc.encode_fields(table))
    assert torch.equal(again.encode_scenario(table), enc.encode_scenario(table))


# ---- shapes and structure ----

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("fm", [False, True])
def test_every_named_point_has_its_declared_width(tmp_path, variant, fm):
    model, enc, table, cfg = _model(tmp_path, embedding=variant, fm=fm)
    fields, scen = _inputs(enc, table)
    out = model(fields, scen)
    assert isinstance(out, LfmOutput)
    n_fields, dim = len(enc.fields), cfg.model.embedding_dim
    expected = {"embed": n_fields * dim + 6 + 5, "cross1": n_fields * dim + 11, "cross2": n_fields * dim + 11}
    if fm:
        expected["fm"] = n_fields * dim + 11 + dim
    expected.update({"dnn1": 12, "dnn2": 7})
    assert model.cr_points == expected and list(out.cr) == list(expected)  # mixing-tower order
    for name, width in expected.items():
        assert out.cr[name].shape == (16, width), name
    assert out.logits.shape == (16, 2) and out.ur.shape == (16, 6) and out.ir.shape == (16, 5)
    assert not hasattr(model, "last_cr")  # representations are returned, never stashed


@pytest.mark.parametrize("variant", VARIANTS)
def test_ur_reads_only_user_fields_and_ir_only_item_fields(tmp_path, variant):
    model, enc, table, _ = _model(tmp_path, embedding=variant)
    model.eval()
    fields, scen = _inputs(enc, table)
    n_user = len(enc.user)
    out = model(fields, scen)
    assert torch.allclose(out.ur, model.user_vectors(fields[:, :n_user]), atol=1e-6)
    assert torch.allclose(out.ir, model.item_vectors(fields[:, n_user:]), atol=1e-6)
    shuffled = fields.clone()
    shuffled[:, n_user:] = shuffled[:, n_user:].flip(0)  # other items, other scenario
    other = model(shuffled, scen.flip(0))
    assert torch.equal(other.ur, out.ur) and not torch.equal(other.ir, out.ir)


def test_cross_layer_is_dcn_v2():
    layer = CrossLayer(5)
    x0, x = torch.randn(3, 5), torch.randn(3, 5)
    w, b = layer.linear.weight, layer.linear.bias
    assert torch.allclose(layer(x0, x), x0 * (x @ w.T + b) + x)


def test_cross_net_stacks_the_layer_over_one_x0():
    x0 = torch.randn(3, 5)
    net = CrossNet(5, 2)
    outs = net.outputs(x0)
    assert len(outs) == 2 and torch.equal(outs[1], net[1](x0, net[0](x0, x0))) and torch.equal(net(x0), outs[1])
    assert torch.equal(CrossNet(5, 0)(x0), x0)


def test_mlp_block_ends_linear_or_activated_and_keeps_the_checkpoint_names():
    tower = Mlp(6, [5, 4], 3)
    assert list(tower.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    x = torch.randn(8, 6)
    hidden = tower.hidden_outputs(x)
    assert [h.shape for h in hidden] == [(8, 5), (8, 4)] and all((h >= 0).all() for h in hidden)
    assert torch.equal(tower(x), tower[4](hidden[-1])) and tower.out_dim == 3
    dnn = Mlp(6, [5])
    assert dnn.out_dim == 5 and torch.equal(dnn(x), dnn.hidden_outputs(x)[-1])
    assert Mlp(6, []).out_dim == 6 and len(tower.linears) == 3


def test_fm_term_is_pairwise_sum():
    e = torch.randn(2, 4, 3)
    pairwise = sum(e[:, i] * e[:, j] for i in range(4) for j in range(i + 1, 4))
    assert torch.allclose(fm_term(e), pairwise, atol=1e-6)


def test_each_sample_uses_and_trains_only_its_own_scenario_head(tmp_path):
    model, enc, table, _ = _model(tmp_path)
    fields, scen = _inputs(enc, table)
    scen = torch.full_like(scen, 2)
    out = model(fields, scen)
    h = out.cr["dnn2"]
    manual = h @ model.heads.weight[2].T + model.heads.bias[2]
    assert torch.allclose(out.logits, manual, atol=1e-6)
    out.logits.sum().backward()
    grad = model.heads.weight.grad.abs().sum(dim=(1, 2))
    assert grad[2] > 0 and grad[0] == 0 and grad[1] == 0


def test_loss_balance_power_one_is_sample_mean_and_zero_is_scenario_mean():
    logits = torch.tensor([[0.5], [-1.0], [2.0], [0.1]])
    labels = torch.tensor([[1.0], [0.0], [0.0], [1.0]])
    mask = torch.ones_like(labels)
    scen = torch.tensor([0, 0, 0, 1])
    out = LfmOutput(logits, None, None, {}, torch.zeros(()))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")[:, 0]
    assert torch.allclose(lfm_loss(out, labels, mask, scen, 2, 1.0), bce.mean())
    assert torch.allclose(lfm_loss(out, labels, mask, scen, 2, 0.0), (bce[:3].mean() + bce[3]) / 2)
    sqrt = (3 ** 0.5 * bce[:3].mean() + bce[3]) / (3 ** 0.5 + 1)
    assert torch.allclose(lfm_loss(out, labels, mask, scen, 2, 0.5), sqrt)
    masked = mask.clone()
    masked[3] = 0  # a null label neither counts nor weighs its scenario
    assert torch.allclose(lfm_loss(out, labels, masked, scen, 2, 0.0), bce[:3].mean())


# ---- STEM ----

def test_stem_task_loss_reaches_only_its_slice_its_expert_and_the_shared_path(tmp_path):
    model, enc, table, cfg = _model(tmp_path, embedding="stem")
    fields, scen = _inputs(enc, table, 64)
    out = model(fields, scen)
    task = 0
    out.logits[:, task].sum().backward()
    d, td = cfg.model.embedding_dim, cfg.model.stem_task_dim
    g = model.embedding.table.table.weight.grad  # (rows, d + T * td)
    assert g[:, :d].abs().sum() > 0  # shared slice: trained by every task
    assert g[:, d + task * td: d + (task + 1) * td].abs().sum() > 0  # own slice
    assert g[:, d + 1 * td: d + 2 * td].abs().sum() == 0  # the other task's slice: no gradient
    own, other = model.stem.experts[task], model.stem.experts[1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in other.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.stem.gates[1].parameters())
    assert model.mixing.crosses[0].linear.weight.grad.abs().sum() > 0  # the shared expert (mixing tower)


def test_stem_other_tasks_experts_join_the_forward_pass(tmp_path):
    model, enc, table, _ = _model(tmp_path, embedding="stem")
    model.eval()
    fields, scen = _inputs(enc, table)
    before = model(fields, scen).logits[:, 0].clone()
    with torch.no_grad():
        model.stem.experts[1][0].bias.add_(1.0)  # change task 1's expert only
    after = model(fields, scen).logits[:, 0]
    assert not torch.allclose(before, after)  # task 0's prediction reads task 1's expert (All Forward)


def test_stem_gate_mixes_all_experts_with_a_softmax(tmp_path):
    model, enc, table, cfg = _model(tmp_path, embedding="stem")
    fields, scen = _inputs(enc, table)
    emb = model.embedding(fields, scen)
    h = model.mixing(emb.mixing, model.user_vectors(fields[:, :3]), model.item_vectors(fields[:, 3:]))["dnn2"]
    mixed = model.stem(h, emb.mixing, emb.task_slices)
    t = 1
    w = model.stem.gates[t](torch.cat([emb.mixing.flatten(1), emb.task_slices[:, t].flatten(1)], 1)).softmax(1)
    experts = [h] + [e(emb.task_slices[:, j].flatten(1)) for j, e in enumerate(model.stem.experts)]
    manual = sum(w[:, j:j + 1] * experts[j] for j in range(len(experts)))
    assert torch.allclose(mixed[:, t], manual, atol=1e-6)


# ---- Crocodile ----

def test_covariance_loss_on_a_known_batch():
    # N=2, M=2, d=1: identical centred experts [1, -1]: covariance = (1 + 1) / 2 = 1, over d^2 = 1.
    o = torch.tensor([[[1.0], [1.0]], [[-1.0], [-1.0]]])
    assert covariance_loss(o).item() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3, 4))
    c = x - x.mean(0)
    expected = sum(np.abs(c[:, p].T @ c[:, q]).sum() / 7 for p in range(3) for q in range(p + 1, 3)) / 16
    assert covariance_loss(torch.tensor(x)).item() == pytest.approx(expected)
    independent = torch.zeros(5, 2, 3)
    independent[:, 0] = torch.randn(5, 3)  # expert 1 constant: zero covariance
    assert covariance_loss(independent).item() == 0.0


def test_crocodile_gate_is_per_dimension_from_prior_fields_only(tmp_path):
    model, enc, table, cfg = _model(tmp_path, embedding="crocodile")
    fields, scen = _inputs(enc, table)
    croc = model.embedding
    gate = croc.gate(fields, scen)
    m, n_fields, d = cfg.model.crocodile_tables, len(enc.fields), cfg.model.embedding_dim
    assert gate.shape == (16, m, n_fields, d)
    assert torch.allclose(gate.sum(1), torch.ones(16, n_fields, d))
    non_prior = fields.clone()
    non_prior[:, [1, 2, 4, 5]] = 0  # every field except user_id (0) and video_id (3)
    assert torch.equal(croc.gate(non_prior, scen), gate)
    for col in (0, 3):
        changed = fields.clone()
        changed[:, col] = (changed[:, col] + 1) % enc.cardinalities[col]
        assert not torch.allclose(croc.gate(changed, scen), gate)
    assert not torch.allclose(croc.gate(fields, (scen + 1) % enc.scenario.cardinality), gate)
    outs = croc.expert_outputs(fields)
    assert torch.allclose(croc(fields, scen).mixing, (gate * outs).sum(1), atol=1e-7)


def test_crocodile_adds_weighted_covariance_loss_in_training(tmp_path):
    model, enc, table, cfg = _model(tmp_path, embedding="crocodile", crocodile_cov_weight=0.5)
    fields, scen = _inputs(enc, table, 32)
    model.train()
    out = model(fields, scen)
    expected = 0.5 * covariance_loss(model.embedding.expert_outputs(fields).flatten(2))
    assert torch.allclose(out.aux_loss, expected) and out.aux_loss > 0
    labels, mask = torch.zeros(32, 2), torch.ones(32, 2)
    base = lfm_loss(out._replace(aux_loss=torch.zeros(())), labels, mask, scen, enc.scenario.cardinality, 0.5)
    assert torch.allclose(lfm_loss(out, labels, mask, scen, enc.scenario.cardinality, 0.5), base + expected)
    model.eval()
    assert model(fields, scen).aux_loss.item() == 0.0


def test_sizes_come_from_config(tmp_path):
    model, _, _, _ = _model(tmp_path, embedding_dim=3, user_tower=[5], item_tower=[9, 2], cross_layers=1, dnn=[4])
    assert (model.ur_dim, model.ir_dim) == (5, 2)
    assert list(model.cr_points) == ["embed", "cross1", "dnn1"] and model.cr_points["embed"] == 6 * 3 + 5 + 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_cross_points_equal_the_forward_pass(tmp_path, variant):
    model, enc, table, _ = _model(tmp_path, embedding=variant)
    model.eval()
    fields, scen = _inputs(enc, table)
    out, points = model(fields, scen), model.cross_points(fields, scen)
    assert list(points) == list(out.cr) and all(torch.equal(points[k], out.cr[k]) for k in points)

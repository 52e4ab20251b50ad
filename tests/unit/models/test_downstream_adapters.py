"""Feature-level adapters: each changes the ranker the way docs/domain.md section 3 describes."""
from __future__ import annotations

import pytest
import torch

from models.adapters import (AdapterKind, AdapterSizes, GateShape, Representation, TransferBlock, TransferSpec)
from models.downstream import Batch, DownstreamRanker, DownstreamSizes

B, F, D, IN = 5, 3, 4, 7
VOCAB = [6, 5, 4]
SIZES = DownstreamSizes(embedding_dim=D, cross_layers=2, dnn=(8, 4), adapter_hidden=(6,))
DIMS = {r: IN for r in Representation}


def vectors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {r.value: torch.randn(B, IN, generator=g) for r in Representation}


def batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    fields = torch.stack([torch.randint(0, n, (B,), generator=g) for n in VOCAB], dim=1)
    return Batch(fields=fields, labels=torch.zeros(B), vectors=vectors(seed))


def test_zero_initialised_gate_is_identity_and_ranker_starts_as_no_transfer():
    torch.manual_seed(0)
    plain = DownstreamRanker(VOCAB, SIZES)
    gated = DownstreamRanker(VOCAB, SIZES, TransferSpec.of(cr_user="gate", cr_item="gate"), DIMS)
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("transfer.") for k in missing)
    b = batch()
    out = gated.transfer(gated.embeddings(b.fields), b.vectors)
    assert out.gate is not None and torch.equal(out.gate, torch.ones(B, F, D))
    assert out.extra_fields is None
    assert torch.allclose(gated(b), plain(b))


def test_gate_multiplies_into_own_field_embeddings():
    sizes = AdapterSizes(field_dim=D, gate_zero_init=False)
    torch.manual_seed(1)
    block = TransferBlock(TransferSpec.of(cr_user="gate"), DIMS, F, sizes)
    emb = torch.randn(B, F, D)
    vec = vectors()
    out = block(emb, vec)
    expected_gate = sizes.gate_scale * torch.sigmoid(block.adapters["cr_user"].proj(vec["cr_user"])).view(B, F, D)
    assert torch.allclose(out.gate, expected_gate)
    assert torch.allclose(out.embeddings, emb * expected_gate)  # no field appended, every value re-weighted
    assert out.embeddings.shape == (B, F, D)
    assert not torch.allclose(out.embeddings, emb)


def test_two_gates_multiply_and_shared_gate_is_the_same_for_every_field():
    torch.manual_seed(2)
    sizes = AdapterSizes(field_dim=D, gate_zero_init=False, gate_shape=GateShape.shared)
    block = TransferBlock(TransferSpec.of(cr_user="gate", cr_item="gate"), DIMS, F, sizes)
    vec = vectors()
    out = block(torch.ones(B, F, D), vec)
    g_user = block.adapters["cr_user"](vec["cr_user"])
    g_item = block.adapters["cr_item"](vec["cr_item"])
    assert torch.allclose(out.gate, g_user * g_item)
    assert torch.allclose(out.gate[:, 0], out.gate[:, F - 1])


def test_paper_scale_gate_starts_at_one_half():
    block = TransferBlock(TransferSpec.of(cr_user="gate"), DIMS, F, AdapterSizes(field_dim=D, gate_scale=1.0))
    out = block(torch.ones(B, F, D), vectors())
    assert torch.allclose(out.gate, torch.full((B, F, D), 0.5))


@pytest.mark.parametrize("kind", [AdapterKind.linear, AdapterKind.mlp])
def test_concat_adapters_append_one_field_and_leave_own_fields_alone(kind):
    torch.manual_seed(3)
    block = TransferBlock(TransferSpec.of(ur=kind, ir=kind), DIMS, F, AdapterSizes(field_dim=D))
    emb = torch.randn(B, F, D)
    vec = vectors()
    out = block(emb, vec)
    assert out.gate is None
    assert out.embeddings.shape == (B, F + 2, D)
    assert torch.equal(out.embeddings[:, :F], emb)
    assert torch.allclose(out.extra_fields[:, 0], block.adapters["ur"](vec["ur"]))
    assert torch.allclose(out.extra_fields[:, 1], block.adapters["ir"](vec["ir"]))


def test_linear_adapter_is_linear_and_mlp_adapter_is_not():
    torch.manual_seed(4)
    sizes = AdapterSizes(field_dim=D, mlp_hidden=(16,))
    lin = TransferBlock(TransferSpec.of(ur="linear"), DIMS, F, sizes).adapters["ur"]
    mlp = TransferBlock(TransferSpec.of(ur="mlp"), DIMS, F, sizes).adapters["ur"]
    x, y = torch.randn(B, IN), torch.randn(B, IN)

    def affine_gap(f):  # f(x + y) - f(x) - f(y) + f(0) is zero exactly for an affine map
        return (f(x + y) - f(x) - f(y) + f(torch.zeros(B, IN))).abs().max().item()

    assert affine_gap(lin) < 1e-5
    assert affine_gap(mlp) > 1e-3


@pytest.mark.parametrize("spec", [TransferSpec.of(ur="linear"), TransferSpec.of(ur="mlp", ir="mlp"),
                                  TransferSpec.of(ur="mlp", ir="mlp", cr_user="gate", cr_item="gate")])
def test_ranker_output_depends_on_the_transferred_vectors(spec):
    torch.manual_seed(5)
    model = DownstreamRanker(VOCAB, SIZES, spec, DIMS)
    for p in model.transfer.parameters():  # move zero-initialised gates off their identity start
        torch.nn.init.normal_(p)
    b = batch()
    other = Batch(fields=b.fields, labels=b.labels, vectors=vectors(seed=9))
    assert not torch.allclose(model(b), model(other))
    plain = DownstreamRanker(VOCAB, SIZES)
    assert torch.equal(plain(b), plain(other))  # no transfer: vectors are ignored


def test_a_row_without_a_state_reads_the_learned_default_and_the_others_their_vector():
    torch.manual_seed(3)
    model = DownstreamRanker(VOCAB, SIZES, TransferSpec.of(ur="mlp", cr_user="gate"), DIMS)
    for p in model.transfer.parameters():  # move the zero-initialised gate and defaults off their start
        torch.nn.init.normal_(p)
    b = batch()
    new = torch.tensor([True, False, True, False, True])  # rows 1 and 3: users without a CR state
    masked = Batch(fields=b.fields, labels=b.labels, vectors=b.vectors, present={"cr_user": new})
    filled = model.transfer.filled(Representation.cr_user, b.vectors["cr_user"], new)
    assert torch.equal(filled[new], b.vectors["cr_user"][new])
    assert torch.equal(filled[~new], model.transfer.defaults["cr_user"].detach().expand(2, IN))
    scrambled = {**b.vectors, "cr_user": torch.where(new.unsqueeze(1), b.vectors["cr_user"], torch.randn(B, IN))}
    other = Batch(fields=b.fields, labels=b.labels, vectors=scrambled, present={"cr_user": new})
    assert torch.equal(model(masked), model(other))  # whatever a missing row holds, it reads the default
    assert not torch.allclose(model(masked)[~new], model(b)[~new])  # unmasked, the same rows read their zeros
    model(masked).sum().backward()
    assert model.transfer.defaults["cr_user"].grad.abs().sum() > 0  # the default is learnt from the new rows
    assert model.transfer.defaults["ur"].grad is None or not model.transfer.defaults["ur"].grad.any()


def test_transfer_spec_is_typed_and_refuses_bad_input():
    spec = TransferSpec.of(cr_item="gate", ur="mlp")
    assert spec.representations == (Representation.ur, Representation.cr_item)  # canonical order
    assert spec.with_kind(AdapterKind.gate) == (Representation.cr_item,)
    with pytest.raises(ValueError):
        TransferSpec.of(ur="conv")
    with pytest.raises(ValueError, match="twice"):
        TransferSpec(((Representation.ur, AdapterKind.mlp), (Representation.ur, AdapterKind.gate)))
    with pytest.raises(ValueError, match="no input width"):
        TransferBlock(TransferSpec.of(ir="mlp"), {Representation.ur: IN}, F, AdapterSizes(field_dim=D))


def test_sizes_derive_from_the_lfm_settings_with_a_narrower_dnn():
    from lfm.config.model import ModelSettings

    lfm = ModelSettings(embedding_dim=12, cross_layers=2, dnn=[256, 64])
    sizes = DownstreamSizes.from_lfm(lfm)
    assert sizes.embedding_dim == 12 and sizes.cross_layers == 2
    assert all(d < w for d, w in zip(sizes.dnn, lfm.dnn))

"""The Isomorphic Interaction Module: exact copies of the checkpoint's first k layers, fresh layers after them."""
from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pytest
import torch

from lfm.config.downstream import TrainerSettings, TwoTowerSettings
from lfm.config.model import ModelSettings, TrainSettings
from lfm.errors import LfmError
from models.downstream import DownstreamSizes, VersionMismatch
from models.iim import IimDepthError, IimSource, input_layers, interaction_layers
from models.registry import Registry
from models.training.pretrain import pretrain
from models.training.setup import DownstreamSetup
from models.training.transfer import run_transfer
from models.training.variants import TransferRequest, TransferVariant
from tests.support.planted import planted_frames
from tests.support.config import make_config

LFM = ModelSettings(embedding_dim=4, user_tower=[8], item_tower=[8], cross_layers=2, dnn=[32, 16])
SETTINGS = DownstreamSetup(
    sizes=DownstreamSizes(embedding_dim=4, cross_layers=2, dnn=(8,), adapter_hidden=(8,)),
    trainer=TrainerSettings(batch_size=256, max_epochs=30, patience=2, threads=1),
    retrieval=TwoTowerSettings(hidden=(8,)),
)


@pytest.fixture(scope="module")
def planted():
    return planted_frames(rows=2500, test_rows=800, pretrain_rows=12000)


@pytest.fixture(scope="module")
def source(planted, tmp_path_factory) -> IimSource:
    """A briefly pretrained LFM on the planted rows, registered and loaded back through the registry."""
    cfg = make_config(tmp_path_factory.mktemp("iim"), schema=planted.schema.model_dump(),
                      model=LFM.model_dump(), train=TrainSettings(max_epochs=4, batch_size=256, threads=1, lr=1e-2).model_dump())
    table = pa.Table.from_pandas(planted.pretrain, preserve_index=False)
    result = pretrain(table.slice(0, 10000), table.slice(10000), cfg, seed=0, progress=None)
    card = Registry(cfg).register(result.model, result.encoders, result.metrics)
    return IimSource(Registry(cfg).load(card.model_version), scenario=0)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _disjoint(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Every weight tensor differs (a fresh layer shares no tensor with the checkpoint)."""
    sa, sb = a.state_dict(), b.state_dict()
    return all(not torch.equal(sa[k], sb[k]) for k in sa if sa[k].is_floating_point() and sa[k].numel() > 1)


@pytest.mark.parametrize("k", [0, 1, 3, 4])
def test_iim_copies_exactly_the_first_k_layers_and_the_rest_are_fresh(source, k):
    lfm = source.checkpoint.model
    assert source.depth == LFM.cross_layers + len(LFM.dnn) == 4
    torch.manual_seed(0)
    iim = source.build(k=k, pretrained=True)
    torch.manual_seed(0)
    control = source.build(k=k, pretrained=False)

    for src, dst in zip(input_layers(lfm), input_layers(iim.body)):
        assert _same(src, dst)  # embeddings and towers: the checkpoint's
    layers_src, layers_iim, layers_ctl = (interaction_layers(m) for m in (lfm, iim.body, control.body))
    for i, (src, dst, ctl) in enumerate(zip(layers_src, layers_iim, layers_ctl)):
        if i < k:
            assert _same(src, dst), f"layer {i} should be the checkpoint's"
        else:
            assert _disjoint(src, dst), f"layer {i} should be fresh"
            assert _same(dst, ctl), f"layer {i} should be the same fresh draw as the control's"
    assert _same(iim.head, control.head)
    assert all(_disjoint(s, c) for s, c in zip(input_layers(lfm), input_layers(control.body)))
    assert all(p.requires_grad for p in iim.parameters())  # fine-tuned, unlike the frozen checkpoint
    assert not any(p.requires_grad for p in lfm.parameters())


def test_iim_architecture_matches_the_lfm_mixing_tower(source):
    iim = source.build(k=2, pretrained=True)
    lfm = source.checkpoint.model
    assert iim.body.mixing.points == lfm.mixing.points
    assert [type(m) for m in interaction_layers(iim.body)] == [type(m) for m in interaction_layers(lfm)]
    assert iim.head.out_features == 1


def test_iim_and_control_fine_tune_and_the_pretrained_start_is_ahead(planted, source):
    runs = {}
    for variant in (TransferVariant.iim, TransferVariant.iim_random):
        runs[variant] = run_transfer(planted.train, planted.test, "is_click", TransferRequest(variant, k=4),
                                     planted.schema, SETTINGS, seed=0, iim=source,
                                     feature_version=source.model_version)
    iim, control = runs[TransferVariant.iim], runs[TransferVariant.iim_random]
    assert iim.label == "iim_k4" and control.label == "iim_random"  # one control for every k
    assert iim.fit.history[0] > control.fit.history[0]  # one epoch from the LFM beats one epoch from scratch
    assert iim.test_auc > 0.6


def test_bad_depth_and_another_model_version_are_refused(planted, source):
    with pytest.raises(IimDepthError, match="0..4"):
        source.build(k=5, pretrained=True)
    other = "0" * 20
    with pytest.raises(VersionMismatch, match=other):
        source.check_feature_version(other)
    with pytest.raises(VersionMismatch, match="pin the feature service"):
        run_transfer(planted.train, planted.test, "is_click", TransferRequest(TransferVariant.iim, k=1),
                     planted.schema, SETTINGS, seed=0, iim=source, feature_version=other)
    assert issubclass(VersionMismatch, LfmError) and issubclass(IimDepthError, LfmError)


def test_unknown_scenario_falls_back_to_the_oov_bucket(source):
    assert replace(source, scenario=12345).scenario_index() == 0
    assert source.scenario_index() != 0


def test_a_lineage_version_serves_under_its_bases_feature_service(source):
    """A lineage export's feature service carries its base; any version of that lineage may start the IIM (the
    transfer report takes the one trained through the day before the test days), another lineage's may not."""
    from dataclasses import replace

    member = replace(source, lineage_root="b" * 20)
    member.check_feature_version("b" * 20)  # the base's service
    member.check_feature_version(source.model_version)  # its own
    with pytest.raises(VersionMismatch, match="c" * 20):
        member.check_feature_version("c" * 20)

"""A registered LFM continued on later days: vocabularies grow by appending, known ids keep their trained rows,
a new id gets a row of its own that the new days train, and the card records the parent and every day seen
(real torch models, real registry; no Spark)."""
from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from lfm.names import BadInput
from models.blocks import FieldEmbedding
from models.lfm import build_lfm
from models.lineage import Lineage, carry_weights
from models.registry import CARD, CheckpointError, Registry
from models.training.pretrain import pretrain
from models.training.seeding import seeded
from tests.support.tiny import tiny_config, tiny_table

DAY = [dt.date(2022, 5, 1) + dt.timedelta(days=i) for i in range(4)]
NEW_USERS = range(30, 40)  # tiny_table draws users 0..29; the later day adds these


def later_day(n: int, seed: int) -> pa.Table:
    """A later day's samples: users 10..39, so 30..39 are new to a model that saw only tiny_table's days."""
    t = tiny_table(n, seed)
    return t.set_column(t.schema.get_field_index("user_id"), "user_id", pc.add(t.column("user_id"), 10))


def _base(tmp_path, embedding: str):
    cfg = tiny_config(tmp_path, embedding=embedding)
    reg = Registry(cfg)
    base = pretrain(tiny_table(400, 0), tiny_table(200, 1), cfg, progress=None)
    card = reg.register(base.model, base.encoders, base.metrics, Lineage.base(DAY[:2]))
    return cfg, reg, card


def _rows(model, field: int, index: int) -> list[torch.Tensor]:
    """Every FieldEmbedding row of (field, index) in `model` (one per table that covers the field)."""
    out = []
    for m in model.modules():
        if isinstance(m, FieldEmbedding) and len(m.cardinalities) > field:
            out.append(m.table.weight[sum(m.cardinalities[:field]) + index].detach().clone())
    return out


@pytest.mark.parametrize("embedding", ["plain", "stem", "crocodile"])
def test_a_continued_model_keeps_known_rows_and_trains_rows_for_new_ids(tmp_path, embedding):
    cfg, reg, card = _base(tmp_path, embedding)
    parent = reg.load(card.model_version)
    train, valid = later_day(400, 2), later_day(200, 3)

    grown = parent.encoders.extended(train, parent.card.model)
    user = grown.user[0]
    assert user.vocab[:len(parent.encoders.user[0].vocab)] == parent.encoders.user[0].vocab  # appended, not re-sorted
    assert sorted(user.vocab[len(parent.encoders.user[0].vocab):], key=int) == [str(u) for u in NEW_USERS]
    assert grown.growth_over(parent.encoders) == {"user_id": 10, "user_active_degree": 0, "register_days": 0,
                                                  "video_id": 0, "tag": 0, "video_duration": 0}

    start = build_lfm(grown, cfg.schema, parent.card.model)
    carry_weights(parent.model, start)
    for known in range(30):  # every id the parent knew: the same index, the same trained row
        i = int(parent.encoders.user[0].encode(pa.array([known]))[0])
        assert int(user.encode(pa.array([known]))[0]) == i
        for a, b in zip(_rows(parent.model, 0, i), _rows(start, 0, i)):
            assert torch.equal(a, b)
    t = later_day(50, 4)  # the carried model computes what the parent computed for rows of known ids
    known_rows = t.filter(pc.less(t.column("user_id"), 30))
    a = parent.model(parent.encoders.encode_fields(known_rows), parent.encoders.encode_scenario(known_rows))
    start.eval()
    b = start(grown.encode_fields(known_rows), grown.encode_scenario(known_rows))
    assert torch.allclose(a.logits, b.logits, atol=1e-6)

    result = pretrain(train, valid, cfg, seed=0, progress=None, parent=parent)
    assert result.vocab_growth["user_id"] == 10
    new_index = int(result.encoders.user[0].encode(pa.array([35]))[0])
    assert new_index != 0  # not the unseen bucket
    oov_child, new_child = _rows(result.model, 0, 0), _rows(result.model, 0, new_index)
    with seeded(0, cfg.train.threads, deterministic_algorithms=True):  # the new row as pretrain initialised it
        fresh = build_lfm(grown, cfg.schema, parent.card.model)
    for trained, init, oov in zip(new_child, _rows(fresh, 0, new_index), oov_child):
        assert not torch.equal(trained, init)  # ...moved: the new days trained it
        assert not torch.equal(trained, oov)  # and it is its own row, not the unseen bucket's


def test_the_card_records_the_parent_the_days_seen_and_the_growth_and_binds_them_to_the_version(tmp_path):
    cfg, reg, card = _base(tmp_path, "plain")
    assert card.lineage == Lineage(None, (DAY[0], DAY[1]), {})
    parent = reg.load(card.model_version)
    result = pretrain(later_day(400, 2), later_day(200, 3), cfg, progress=None, parent=parent)
    lineage = card.lineage.continued(card.model_version, [DAY[2], DAY[3]], result.vocab_growth)
    child = reg.register(result.model, result.encoders, result.metrics, lineage)
    assert child.lineage.parent == card.model_version and child.lineage.seen_through == DAY[3]
    assert child.lineage.seen_days == tuple(DAY) and child.lineage.vocab_growth["user_id"] == 10
    assert len(reg.load(child.model_version).encoders.user[0].vocab) == 40  # tensors only, grown vocabulary

    with pytest.raises(BadInput, match=f"seen days through {DAY[3]}"):
        child.lineage.continued(child.model_version, [DAY[3]], {})  # never the same day twice, never backwards

    path = reg.root / child.model_version / CARD
    data = json.loads(path.read_text())
    data["content"]["lineage"]["seen_days"] = [DAY[0].isoformat()]  # claim it saw less than it did
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError):
        reg.card(child.model_version)


def test_a_lineage_keeps_its_architecture(tmp_path):
    cfg, reg, card = _base(tmp_path, "plain")
    parent = reg.load(card.model_version)
    other = build_lfm(parent.encoders, cfg.schema, parent.card.model.model_copy(update={"dnn": [10, 7]}))
    with pytest.raises(BadInput, match="a lineage keeps its architecture"):
        carry_weights(parent.model, other)


def _card(version: str, parent: str | None, through: int):
    """A stand-in for a registry card's lineage fields (the functions below read only these)."""
    from types import SimpleNamespace

    return SimpleNamespace(model_version=version, lineage=Lineage(parent, tuple(DAY[:through + 1])), metrics={})


def test_the_version_of_a_day_is_the_one_trained_latest_before_it():
    from models.lineage import maker_of, members, newest, root_of

    base, v1, v2 = _card("base", None, 0), _card("v1", "base", 1), _card("v2", "v1", 2)
    other = _card("other", None, 3)  # another lineage: never picked for this one
    cards = [base, v1, v2, other]
    assert root_of(v2, cards) == "base" and root_of(other, cards) == "other"
    lineage = members("base", cards)
    assert [c.model_version for c in lineage] == ["base", "v1", "v2"]
    assert newest(lineage) is v2
    assert maker_of(lineage, DAY[1]) is base  # v1 has seen DAY[1]: it may not make it
    assert maker_of(lineage, DAY[2]) is v1
    assert maker_of(lineage, DAY[3]) is v2
    assert maker_of(lineage, DAY[0]) is None  # every version has seen it


def test_a_frozen_export_keeps_its_id_and_a_lineage_export_is_another_space():
    from lfm.contract import ExportSpec

    fields = dict(model_version="a" * 20, cr_layer="dnn1", ur_dim=8, ir_dim=8, cr_dim=8, tau_hours=72.0,
                  normalisation="layernorm", state_ttl_days=None, schema_hash="0" * 16)
    frozen, lineage = ExportSpec(**fields), ExportSpec(**fields, cadence_days=1)
    assert "cadence_days" not in frozen.to_json()  # the id every export had before lineages existed
    assert frozen.id != lineage.id and ExportSpec.from_json(lineage.to_json()) == lineage
    assert ExportSpec(**fields, cadence_days=2).id != lineage.id
    with pytest.raises(BadInput, match="every_days"):
        ExportSpec(**fields, cadence_days=0)

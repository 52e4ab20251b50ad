"""The downstream trainer: early stopping on validation AUC, determinism per seed, clear errors on bad input."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lfm.errors import LfmError
from tests.support.config import make_config
from lfm.config import ConfigError
from lfm.config.downstream import TrainerSettings, TwoTowerSettings
from models.downstream import DownstreamError, DownstreamSizes, EmptyScenario, MissingTask, MissingVectors
from models.training.encoding import as_table, chronological_split, vector_matrix, vector_width
from models.training.fit import EarlyStopping
from models.training.setup import DownstreamSetup
from models.training.transfer import run_transfer
from models.training.variants import Granularity, TransferRequest, TransferVariant
from tests.support.planted import planted_frames

SETTINGS = DownstreamSetup(
    sizes=DownstreamSizes(embedding_dim=4, cross_layers=2, dnn=(16, 8), adapter_hidden=(8,)),
    trainer=TrainerSettings(batch_size=256, max_epochs=60, patience=2, threads=1),
    retrieval=TwoTowerSettings(hidden=(8,), scratch_dim=6, recall_k=(5, 20)),
)


@pytest.fixture(scope="module")
def planted():
    return planted_frames()


def test_early_stopping_keeps_the_best_epoch_and_waits_for_patience():
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    model = torch.nn.Linear(1, 1)
    metrics = [0.60, 0.70, 0.705, 0.69, 0.71]  # 0.705 and 0.71 are within min_delta of 0.70: no gain
    stops = []
    for epoch, m in enumerate(metrics, start=1):  # epochs count from 1, as the log and the CLI say them
        with torch.no_grad():
            model.weight.fill_(epoch)
        stops.append(stopper.update(m, epoch, model))
    assert stops == [False, False, False, False, True]
    assert stopper.best_epoch == 2 and stopper.best == 0.70
    assert stopper.best_state["weight"].item() == 2.0  # the weights of the best epoch, not the last
    slow = EarlyStopping(patience=0, min_delta=0.0, min_epochs=4)
    assert [slow.update(0.5, e, model) for e in range(1, 6)] == [False, False, False, True, True]  # flat start


def test_trainer_early_stops_and_restores_the_best_weights(planted):
    r = run_transfer(planted.train, planted.test, "is_click", TransferRequest(TransferVariant.ur_ir_cr_mlp),
                     planted.schema, SETTINGS, seed=0)
    assert r.fit.converged, "patience, not the epoch cap, should end a run on this data"
    assert r.fit.epochs < SETTINGS.trainer.max_epochs
    assert r.fit.epochs == r.fit.best_epoch + SETTINGS.trainer.patience + 1  # best, then patience+1 without a gain
    assert r.fit.best_valid_auc == max(r.fit.history) == r.fit.history[r.fit.best_epoch - 1]  # 1-based
    assert r.test_auc > 0.7  # the vectors carry the planted signal
    assert r.train_rows + r.valid_rows == len(planted.train)
    assert r.vector_coverage == {"ur": 1.0, "ir": 1.0, "cr_user": 1.0, "cr_item": 1.0}


def test_epoch_cap_is_reported_as_not_converged(planted):
    short = replace(SETTINGS, trainer=SETTINGS.trainer.model_copy(update={"max_epochs": 1}))
    r = run_transfer(planted.train, planted.test, "is_click", TransferRequest(TransferVariant.none),
                     planted.schema, short, seed=0)
    assert r.fit.epochs == 1 and not r.fit.converged


@pytest.mark.parametrize("variant", [TransferVariant.ur_ir_cr_gate, TransferVariant.retrieval_ur])
def test_training_is_deterministic_per_seed(planted, variant):
    runs = [run_transfer(planted.train, planted.test, "is_click", TransferRequest(variant), planted.schema,
                         SETTINGS, seed=s, keep_model=True) for s in (7, 7, 8)]
    a, b, c = runs
    assert a.fit.history == b.fit.history and a.test_auc == b.test_auc and a.recall == b.recall
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert a.fit.history != c.fit.history  # another seed is another run


def test_validation_is_the_chronological_tail_of_the_training_days(planted):
    table = as_table(planted.train.sample(frac=1.0, random_state=0))  # shuffled rows
    fit_part, valid_part = chronological_split(table, 0.25, "event_timestamp")
    assert fit_part.num_rows + valid_part.num_rows == table.num_rows
    fit_t = fit_part.column("event_timestamp").to_pandas()
    valid_t = valid_part.column("event_timestamp").to_pandas()
    assert fit_t.max() <= valid_t.min()


def test_missing_vectors_read_as_zeros_and_coverage_is_reported(planted):
    test = planted.test.copy()
    test["ur"] = [None if i % 4 == 0 else v for i, v in enumerate(test["ur"])]
    m, present = vector_matrix(as_table(test), "ur", vector_width([as_table(test)], "ur"))
    assert present.mean() == pytest.approx(0.75)
    assert not m[~present].any() and m[present].any()
    r = run_transfer(planted.train, test, "is_click", TransferRequest(TransferVariant.ur_linear), planted.schema,
                     replace(SETTINGS, trainer=SETTINGS.trainer.model_copy(update={"max_epochs": 2})), seed=0)
    assert r.vector_coverage["ur"] == pytest.approx(0.75)


def test_rows_of_entities_without_a_cr_state_train_with_a_learned_default(planted):
    """Bursty users: no test row's user has a CR state (each first seen on the test day), a fifth of the training
    rows' neither; the run trains (it was refused with "no snapshot precedes these rows") and learns a default."""
    train = planted.train.copy()
    train["cr_user"] = [None if i % 5 == 0 else v for i, v in enumerate(train["cr_user"])]
    test = planted.test.assign(cr_user=None)
    short = replace(SETTINGS, trainer=SETTINGS.trainer.model_copy(update={"max_epochs": 3}))
    r = run_transfer(train, test, "is_click", TransferRequest(TransferVariant.ur_ir_cr_gate), planted.schema,
                     short, seed=0, keep_model=True)
    assert r.vector_coverage["cr_user"] == 0.0 and r.vector_coverage["ur"] == 1.0
    assert r.test_auc > 0.6  # UR, IR and CR(item) still carry the planted signal
    assert r.model.transfer.defaults["cr_user"].abs().sum() > 0  # learnt from the rows without a state
    assert not r.model.transfer.defaults["cr_item"].any()  # every row had a CR(item): its default never moved


def test_bad_inputs_stop_with_clear_errors(planted):
    req = TransferRequest(TransferVariant.none)
    with pytest.raises(MissingTask, match="is_purchase"):
        run_transfer(planted.train, planted.test, "is_purchase", req, planted.schema, SETTINGS, seed=0)
    with pytest.raises(EmptyScenario, match="tab=99"):
        run_transfer(planted.train.iloc[:0], planted.test, "is_click", req, planted.schema, SETTINGS, seed=0,
                     scenario=99)
    with pytest.raises(EmptyScenario):
        run_transfer(planted.train, planted.test.iloc[:0], "is_click", req, planted.schema, SETTINGS, seed=0)
    with pytest.raises(MissingVectors, match="cr_user"):
        run_transfer(planted.train.drop(columns=["cr_user"]), planted.test, "is_click",
                     TransferRequest(TransferVariant.ur_ir_cr_gate), planted.schema, SETTINGS, seed=0)
    with pytest.raises(MissingVectors, match="no row of the training or test frames has a 'ur' vector"):
        run_transfer(planted.train.assign(ur=None), planted.test.assign(ur=None), "is_click",
                     TransferRequest(TransferVariant.ur_linear), planted.schema, SETTINGS, seed=0)
    with pytest.raises(DownstreamError, match="needs k"):
        TransferRequest(TransferVariant.iim)
    with pytest.raises(DownstreamError, match="checkpoint"):
        run_transfer(planted.train, planted.test, "is_click", TransferRequest(TransferVariant.iim, k=1),
                     planted.schema, SETTINGS, seed=0)
    one_sided = planted.test.assign(is_click=0)
    with pytest.raises(DownstreamError, match="both labels"):
        run_transfer(planted.train, one_sided, "is_click", req, planted.schema, SETTINGS, seed=0)
    for err in (MissingTask, EmptyScenario, MissingVectors, DownstreamError):
        assert issubclass(err, LfmError)


def test_variants_are_typed_options_with_a_granularity():
    assert TransferVariant("ur_ir_cr_gate").granularity is Granularity.feature
    assert TransferVariant.iim_random.granularity is Granularity.module
    assert TransferVariant.retrieval_cr_user.granularity is Granularity.model
    assert TransferRequest(TransferVariant.iim, k=2).label == "iim_k2"
    gate = TransferVariant.ur_ir_cr_gate.transfer_spec
    assert [r.value for r in gate.representations] == ["ur", "ir", "cr_user", "cr_item"]
    with pytest.raises(ValueError):
        TransferVariant("ur_sum")


def test_settings_come_from_the_downstream_section_of_the_one_config(tmp_path):
    cfg = make_config(tmp_path, model={"item_tower": [32, 12], "dnn": [40, 20]},
                      downstream={"trainer": {"patience": 7}, "retrieval": {"hidden": [16]}})
    setup = DownstreamSetup.from_config(cfg, max_epochs=3)  # a command-line override
    assert setup.trainer.patience == 7 and setup.trainer.max_epochs == 3 and setup.trainer.batch_size == 1024
    assert setup.retrieval.hidden == (16,) and setup.retrieval.scratch_dim == 12  # the control is as wide as IR
    assert setup.sizes == DownstreamSizes.from_lfm(cfg.model) and setup.sizes.dnn == (20, 10)
    assert setup.field_encoding == cfg.model
    with pytest.raises(ConfigError, match="downstream.trainer.patiense: unknown key"):
        make_config(tmp_path, downstream={"trainer": {"patiense": 3}})
    with pytest.raises(ConfigError, match="downstream.trainer.valid_fraction"):
        make_config(tmp_path, downstream={"trainer": {"valid_fraction": 1.0}})
    with pytest.raises(ConfigError, match="max_epochs"):
        DownstreamSetup.from_config(cfg, max_epochs=0)

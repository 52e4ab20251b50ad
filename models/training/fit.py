"""The downstream fit loop: AdamW + BCE, early stopping on validation AUC with patience.

Trained to convergence, never for a fixed short budget (a model trained too briefly makes any transfer look
good); the result says whether patience or the epoch cap ended the run.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from lfm.config.downstream import TrainerSettings
from models.downstream import Batch, DownstreamError
from models.training import metrics


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC of one set of rows; a set holding one label cannot be measured and stops the run."""
    if len(np.unique(labels)) < 2:
        raise DownstreamError(f"AUC needs both labels; these {len(labels)} rows hold only {np.unique(labels)} "
                              "(a scenario this small or this one-sided cannot be measured)")
    return metrics.auc(labels, scores)


class EarlyStopping:
    """Tracks the best validation AUC and its weights; says stop after `patience` epochs without a gain."""

    def __init__(self, patience: int, min_delta: float, min_epochs: int = 0) -> None:
        self.patience, self.min_delta, self.min_epochs = patience, min_delta, min_epochs
        self.best = -np.inf
        self.best_epoch = 0  # 1-based, as every log line and printout counts epochs; 0: none yet
        self.best_state: dict[str, Tensor] | None = None
        self.bad_epochs = 0

    def update(self, metric: float, epoch: int, model: nn.Module) -> bool:
        """Record epoch `epoch`'s metric (1-based); True when training should stop."""
        if metric > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = metric, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
        return self.bad_epochs > self.patience and epoch >= self.min_epochs


@dataclass(frozen=True)
class FitResult:
    best_valid_auc: float
    best_epoch: int  # epoch of the kept weights, 1-based (history[best_epoch - 1] is its AUC)
    epochs: int  # epochs run
    converged: bool  # True when patience ended the run, False when the epoch cap did (then: raise max_epochs)
    history: tuple[float, ...]  # validation AUC per epoch
    seconds: float


@torch.no_grad()
def predict(model: nn.Module, data: Batch, batch_size: int) -> np.ndarray:
    model.eval()
    out = [torch.sigmoid(model(data.take(torch.arange(s, min(s + batch_size, len(data))))))
           for s in range(0, len(data), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def fit(model: nn.Module, train: Batch, valid: Batch, settings: TrainerSettings, seed: int) -> FitResult:
    """AdamW + BCE with early stopping on validation AUC; the model ends holding its best epoch's weights."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr,
                            weight_decay=settings.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    stopper = EarlyStopping(settings.patience, settings.min_delta, settings.min_epochs)
    labels = valid.labels.numpy()
    history: list[float] = []
    t0 = time.perf_counter()
    stopped = False
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for s in range(0, len(train), settings.batch_size):
            batch = train.take(order[s:s + settings.batch_size])
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch), batch.labels)
            loss.backward()
            opt.step()
        history.append(auc(labels, predict(model, valid, settings.eval_batch_size)))
        if stopper.update(history[-1], epoch, model):
            stopped = True
            break
    assert stopper.best_state is not None
    model.load_state_dict(stopper.best_state)
    return FitResult(best_valid_auc=stopper.best, best_epoch=stopper.best_epoch, epochs=len(history),
                     converged=stopped, history=tuple(history), seconds=time.perf_counter() - t0)

"""The catchment memory trained first as a rainfall-runoff model, then the MAE around it.

A rainfall-runoff LSTM (neuralhydrology's CudaLSTM) is trained on nothing but its own
targets, every day of every training year. Inside the MAE the memory shares each step with
the encoder and decoder: its LSTM and flow head learn from the rainfall-runoff sequences
(``pipeline.runoff``) while the decoder learns to read a memory that is still changing.
``--memory-pretrain-steps P`` first trains the memory alone for ``P`` steps, each on
``runoff_sequences`` sequences (``history_days + window`` days of a gauged catchment's
weather, riverflow the target on the last ``window``), with the loss of those sequences in
the MAE (``training.loss.memory_flow_loss``, in ``--memory-flow-loss``'s units), then the
MAE's steps begin with a memory that already maps weather to flow. Only the LSTM and the
flow head have a gradient; nothing else changes.

Its own AdamW, learning rate ``lr`` with a warm-up over the first tenth and a cosine decay
over the ``P`` steps; under DDP each rank draws its own sequences and the memory's
gradients are averaged by hand (the MAE's DDP wrapper is not called). The draw is keyed by
(seed, "memory", step, rank), so a run killed while pretraining resumes to the same losses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from pipeline.runoff import RunoffSequences
from training.device import to_device
from training.loss import LossConfig, memory_flow_loss
from training.model import HydroMAE
from training.optim import warmup_cosine


def memory_parameters(model: HydroMAE) -> list[nn.Parameter]:
    """The parameters a rainfall-runoff sequence's loss reaches: the LSTM and its flow head."""
    if model.memory is None or model.memory.flow is None:
        raise ValueError("pretraining the memory needs its flow head (--memory --history-flow)")
    return [*model.memory.lstm.parameters(), *model.memory.flow.parameters()]


def pretrain_step(
    model: HydroMAE,
    optimizer: torch.optim.Optimizer,
    batch: dict,
    loss_cfg: LossConfig,
    lr: float,
    grad_clip: float,
    world: int,
) -> tuple[float, float]:
    """One step of the memory on a batch of rainfall-runoff sequences (``pipeline.runoff``,
    on the model's device): the loss (in ``loss_cfg.memory_units()``) and the gradient norm
    before clipping, both as every rank sees them after averaging."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    params = memory_parameters(model)
    loss = memory_flow_loss(model.forward_runoff(batch), loss_cfg, model.normalizer.denormalize)
    loss.backward()
    value = loss.detach()
    if world > 1:  # the memory alone, outside the MAE's DDP wrapper: average by hand
        for p in params:
            dist.all_reduce(p.grad)
            p.grad /= world
        dist.all_reduce(value)
        value /= world
    norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    if torch.isfinite(value):  # a non-finite loss is the same on every rank: all skip it
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(value), norm


def pretrain_memory(
    model: HydroMAE,
    optimizer: torch.optim.Optimizer,
    runoff: RunoffSequences,
    *,
    count: int,
    first: int,
    total: int,
    seed: int,
    rank: int,
    forcing: float = 0.0,
    loss_cfg: LossConfig,
    lr: float,
    grad_clip: float,
    world: int,
    device: torch.device,
    after_step: Callable[[int, float, float, float], None],
) -> None:
    """Steps ``first`` to ``total - 1`` of the memory's pretraining, each on ``count``
    sequences drawn with (``seed``, ``rank``), a share ``forcing`` of them without soil
    moisture (``RunoffSequences.draw``); ``lr`` the peak learning rate, warmed up
    over the first tenth of ``total`` and decayed to 0 at ``total``. ``after_step(step,
    loss, lr, grad_norm)`` (the step counted from 1) logs and checkpoints."""
    model.train()
    for step in range(first, total):
        batch = to_device(runoff.draw(count, seed, "memory", step, rank, forcing=forcing), device)
        rate = lr * warmup_cosine(step, max(1, total // 10), total)
        loss, norm = pretrain_step(model, optimizer, batch, loss_cfg, rate, grad_clip, world)
        after_step(step + 1, loss, rate, norm)

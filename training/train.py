"""Train the multi-modal MAE (hydromae train --data DATA --out RUN_DIR), alone or under torchrun.

One readable loop, in the manner of nanoGPT's ``train.py``: DDP (gloo on the CPU, NCCL on
GPUs), bf16 autocast on a GPU and fp32 on the CPU, gradient accumulation, clipping, AdamW
with a warm-up and cosine schedule, a non-finite loss skipped the same way on every rank,
and atomic, self-contained checkpoints. ``--resume`` continues exactly: the loader's state
(epoch, batches consumed) and every random state travel in the checkpoint, so a killed
run resumed gives the same losses, to the last bit on the CPU, as a run never stopped.

Outputs in RUN_DIR: ``checkpoint.pt``, ``metrics.jsonl`` (one JSON line per logged step,
per modality), ``tensorboard/`` (the same scalars), ``config.json`` and
``training_curves.png``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline.files import atomic_write
from pipeline.history import CatchmentHistory
from pipeline.loader import HydroLoader, build_loader
from pipeline.manifest import Manifest
from pipeline.runoff import RunoffSequences
from pipeline.schema import MODALITIES, STORE
from training import checkpoint
from training.checkpoint import CHECKPOINT, METRICS, RUN_CONFIG
from training.device import pick_device, to_device
from training.fit_baselines import training_flow_std, training_flow_stds
from training.loss import LossConfig
from training.memory_pretrain import memory_parameters, pretrain_memory
from training.model import HydroMAE
from training.optim import adamw, warmup_cosine
from training.plots import plot_curves
from training.train_config import TrainConfig, build_model, loss_config, window_samples


def train(cfg: TrainConfig) -> list[dict[str, Any]]:
    """Run (or resume) training; return the logged metrics of this process's run."""
    loss_cfg = loss_config(cfg)
    # ---- processes and devices
    ddp = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if ddp:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    # a fixed thread count (this also stops MKL from changing it under load), so that
    # the same run gives the same sums
    torch.set_num_threads(torch.get_num_threads())
    device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", 0)))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    main = rank == 0
    out = Path(cfg.out)
    manifest = Manifest.read(cfg.data)
    if "physical" in loss_cfg.scales():
        loss_cfg.flow_std = training_flow_std(cfg.data, manifest)
    if "catchment" in loss_cfg.scales():
        stds = torch.from_numpy(training_flow_stds(cfg.data, manifest))
        loss_cfg.catchment_flow_std = stds.to(device)  # once, not per step
    if main:
        check_run_dir(out, cfg.resume)
        out.mkdir(parents=True, exist_ok=True)

    # ---- data, model, optimizer, schedule
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, manifest).to(device)
    raw_model = model
    if ddp:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        model = torch.compile(model)
    optimizer = adamw(raw_model, cfg.lr, cfg.weight_decay)
    loader = build_loader(
        source=str(cfg.data), split="train", mode="train", reader=cfg.reader, stride=cfg.stride,
        shards=list(cfg.shards), catchments_per_window=cfg.catchments_per_window,
        batch_size=cfg.batch_size, num_workers=cfg.workers, seed=cfg.seed,
        mask_mode=cfg.mask_mode, strategies=cfg.strategies, rank=rank, world_size=world,
        layout=cfg.layout, window_samples=window_samples(cfg, manifest),
        image_dtype=cfg.image_dtype, pin_memory=device.type == "cuda",
        history_days=cfg.history_days,
    )  # fmt: skip
    runoff = None
    if cfg.runoff_sequences:  # the catchment means, read once (as the loader's history)
        history = CatchmentHistory.read(str(Path(cfg.data) / STORE), manifest, cfg.history_days)
        runoff = RunoffSequences(
            history, manifest, cfg.history_days + manifest.window, manifest.window
        )
    if len(loader) < cfg.accumulate:
        raise ValueError(f"{cfg.data}: the training split gives {len(loader)} batch(es) an epoch")
    val_loader = None
    if cfg.val_every:  # built once; the eval masks are the same at every validation
        val_loader = build_loader(
            source=str(cfg.data), split="val", mode="eval", batch_size=cfg.batch_size,
            num_workers=0, seed=cfg.seed, mask_mode=cfg.mask_mode, rank=rank, world_size=world,
            history_days=cfg.history_days,
        )  # fmt: skip
    # the memory's own optimizer, for its pretraining (training.memory_pretrain)
    memory_optimizer = None
    if cfg.memory_pretrain_steps:
        memory_optimizer = adamw(nn.ParameterList(memory_parameters(raw_model)), cfg.lr,
                                 cfg.weight_decay)  # fmt: skip
    step = memory_step = 0
    ckpt_path = out / CHECKPOINT
    if cfg.resume and ckpt_path.exists():
        state = checkpoint.load(ckpt_path, cfg.data)
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        checkpoint.set_random_states(state["random"][rank])
        step = state["step"]
        memory_step = state.get("memory_step", 0)
        if memory_optimizer is not None and state.get("memory_optimizer"):
            memory_optimizer.load_state_dict(state["memory_optimizer"])
        if main:  # records logged after the checkpoint are logged again as the run redoes them
            keep_metrics_until(out / METRICS, step, memory_step)
    elif main:
        (out / METRICS).unlink(missing_ok=True)
        (out / RUN_CONFIG).write_text(json.dumps(asdict(cfg), default=str, indent=1) + "\n")

    # ---- the loop
    logged: list[dict[str, Any]] = []
    board = None
    if main and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        # on resume, events logged after the checkpoint's step are dropped, as in metrics
        board = SummaryWriter(out / "tensorboard", purge_step=step + 1 if step else None)

    def save(step: int, memory_step: int) -> None:
        _save(ckpt_path, raw_model, (optimizer, memory_optimizer), loader, (step, memory_step),
              cfg, manifest, ddp)  # fmt: skip

    # ---- the memory alone first, as a rainfall-runoff model (--memory-pretrain-steps)
    if memory_optimizer is not None and step == 0 and memory_step < cfg.memory_pretrain_steps:
        assert runoff is not None  # checked with the flags
        total = cfg.memory_pretrain_steps
        memory_bar = tqdm(total=total, initial=memory_step, desc="memory", unit="step",
                          disable=not (main and cfg.progress))  # fmt: skip

        def after_memory_step(k: int, loss: float, lr: float, grad_norm: float) -> None:
            memory_bar.update()
            if main and (k % cfg.log_every == 0 or k == total):
                record = {"memory_step": k, "loss_runoff": loss, "lr": lr, "grad_norm": grad_norm}
                log(record, out, logged, None)
                memory_bar.set_postfix(loss=f"{loss:.4f}")
            if k % cfg.checkpoint_every == 0 or k == total:
                save(0, k)

        pretrain_memory(
            raw_model, memory_optimizer, runoff, count=cfg.runoff_sequences, first=memory_step,
            total=total, seed=cfg.seed, rank=rank, forcing=cfg.runoff_forcing, loss_cfg=loss_cfg,
            lr=cfg.lr, grad_clip=cfg.grad_clip, world=world, device=device,
            after_step=after_memory_step,
        )  # fmt: skip
        memory_bar.close()
        memory_step = total
    epoch = loader.state_dict()["epoch"]
    samples, started = 0, time.perf_counter()
    epoch_samples = 0  # real (not padding) samples this epoch, all ranks
    timing = [0.0, 0.0]  # seconds waiting for batches, seconds in steps, since the last log
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        desc="train",
        unit="step",
        disable=not (main and cfg.progress),
    )
    while step < cfg.steps:
        loader.set_epoch(epoch)
        batches = iter(loader)
        # an epoch gives len(loader) batches on every rank, so every rank stops together
        while step < cfg.steps:
            began = time.perf_counter()
            parts = list(itertools.islice(batches, cfg.accumulate))
            if len(parts) < cfg.accumulate:
                break
            if runoff is not None:  # keyed by the step: a resumed run draws the same
                for micro, batch in enumerate(parts):
                    key = (cfg.seed, step, rank, micro)
                    sequences = runoff.draw(cfg.runoff_sequences, *key, forcing=cfg.runoff_forcing)
                    batch.update(sequences)
            parts = [to_device(batch, device) for batch in parts]
            waited = time.perf_counter() - began  # the loader's share of the step
            # this step's learning rate: linear warm-up, then cosine decay
            lr = cfg.lr * warmup_cosine(step, cfg.warmup, cfg.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            total, per_modality, real = 0.0, dict.fromkeys(MODALITIES, 0.0), 0
            for micro, batch in enumerate(parts):
                last = micro == len(parts) - 1
                sync = model.no_sync() if ddp and not last else contextlib.nullcontext()
                with autocast, sync:
                    groups = model(batch)
                    loss, per = raw_model.forward_loss(groups, loss_cfg, batch["catchment_index"])
                    (loss / cfg.accumulate).backward()
                total += loss.item() / cfg.accumulate
                for k, v in per.items():  # the modalities' and history_flow's
                    per_modality[k] = per_modality.get(k, 0.0) + v.item() / cfg.accumulate
                real += int(batch["weight"].sum())
            # a non-finite loss on any rank, or no real sample on every rank (all padding,
            # after unreadable shards): every rank skips the step, so none desynchronises.
            # One reduction: the minimum of (finite, -real) is (all finite, -most real).
            flags = torch.tensor([1.0 if math.isfinite(total) else 0.0, -real], device=device)
            if ddp:
                dist.all_reduce(flags, op=dist.ReduceOp.MIN)
                mean = torch.tensor([total, *per_modality.values(), real], device=device)
                dist.all_reduce(mean)  # what is logged: the mean over ranks
                total, *rest, real = (mean / world).tolist()
                real = round(real * world)
                per_modality = dict(zip(per_modality, rest, strict=True))
            samples += real * (1 if ddp else world)
            epoch_samples += real
            skipped = flags[0].item() != 1.0 or flags[1].item() == 0
            grad_norm = float("nan")
            if not skipped:
                grad_norm = float(
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
                )
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            timing[0] += waited
            timing[1] += time.perf_counter() - began
            bar.update()
            if main and (step % cfg.log_every == 0 or step == cfg.steps):
                record = {
                    "step": step,
                    "epoch": epoch,
                    "loss": total,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "skipped": skipped,
                    "samples_per_s": samples / (time.perf_counter() - started),
                    # the share of the steps since the last record spent waiting for batches
                    "data_wait": timing[0] / max(timing[1], 1e-9),
                    **{f"loss_{k}": v for k, v in per_modality.items()},
                }
                timing[:] = [0.0, 0.0]
                log(record, out, logged, board)
                bar.set_postfix(
                    loss=f"{total:.4f}",
                    samples_s=f"{record['samples_per_s']:.1f}",
                    data_wait=f"{record['data_wait']:.0%}",
                )
            if cfg.val_every and (step % cfg.val_every == 0 or step == cfg.steps):
                scores = validate(raw_model, val_loader, cfg.val_batches, loss_cfg, ddp, device)
                if main:
                    log({"step": step, **scores}, out, logged, board)
            due = step % cfg.checkpoint_every == 0 or step == cfg.steps
            if due and epoch_samples:  # never a checkpoint of a run that read nothing
                save(step, memory_step)
        if not epoch_samples:
            raise ValueError(
                f"{cfg.data}: epoch {epoch} gave no training sample: every training shard was "
                f"unreachable or damaged ({describe_faults(loader)}); nothing was saved"
            )
        if step < cfg.steps:
            epoch += 1
            epoch_samples = 0
    bar.close()
    if board is not None:
        board.close()
    if main and logged:
        plot_curves(out / METRICS, out / "training_curves.png")
    if ddp:
        _check_ranks_agree(raw_model, out, main)
        dist.destroy_process_group()
    return logged


def check_run_dir(out: Path, resume: bool) -> None:
    """Refuse a run directory that a fresh run would overwrite: one holding a run (continue
    it with ``--resume``) or files that are not a run's."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if not out.exists():
        return
    if (out / CHECKPOINT).exists() and not resume:
        raise ValueError(
            f"--out {out} holds a training run ({CHECKPOINT}): add --resume to continue it, "
            "or choose another --out"
        )
    ours = {CHECKPOINT, METRICS, RUN_CONFIG, "tensorboard", "training_curves.png"}
    others = sorted(p.name for p in out.iterdir() if p.name not in ours and p.name[0] != ".")
    if others:
        raise ValueError(
            f"--out {out} holds files that are not a training run's ({', '.join(others[:3])}"
            f"{' ...' if len(others) > 3 else ''}): choose an empty or new directory"
        )


def keep_metrics_until(path: Path, step: int, memory_step: int = 0) -> None:
    """Drop the records of ``metrics.jsonl`` logged after ``step`` (the memory's
    pretraining's after ``memory_step``), atomically."""
    if not path.exists():
        return

    def kept_record(record: dict) -> bool:
        if "memory_step" in record:
            return record["memory_step"] <= memory_step
        return record.get("step", step + 1) <= step

    lines = [x for x in path.read_text().splitlines() if x.strip()]
    kept = [x for x in lines if kept_record(json.loads(x))]
    atomic_write(path, "".join(f"{x}\n" for x in kept).encode())


def describe_faults(loader: HydroLoader) -> str:
    """The loader's unreadable shards, named (for an error message)."""
    stats = loader.stats
    parts = []
    if stats.unreachable_shards:
        parts.append(f"unreachable: {', '.join(stats.unreachable_shards)}")
    if stats.corrupt_shards:
        parts.append(f"corrupt: {', '.join(stats.corrupt_shards)}")
    return "; ".join(parts) or "see the warnings above"


def log(record: dict[str, Any], out: Path, logged: list, board: Any | None) -> None:
    """Append a record to ``metrics.jsonl`` (and TensorBoard): losses under ``loss/``."""
    logged.append(record)
    with open(out / METRICS, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    if board is not None:
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                tag = f"loss/{key}" if "loss" in key else f"train/{key}"
                board.add_scalar(tag, value, record["step"])
        board.flush()


def validate(
    model: HydroMAE,
    loader: HydroLoader,
    batches: int,
    loss_cfg: LossConfig,
    ddp: bool,
    device: torch.device,
) -> dict[str, float]:
    """Mean loss over the validation split under the collate's ``eval`` masks (the same
    masks at every validation), averaged over ranks; no gradients, model left in train mode."""
    sums = torch.zeros(2 + len(MODALITIES), dtype=torch.float64)  # batches, loss, per modality
    model.eval()
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if batches and i >= batches:
                break
            batch = to_device(batch, device)
            loss, per = model.forward_loss(model(batch), loss_cfg, batch["catchment_index"])
            sums += torch.tensor([1.0, loss.item(), *(per[m].item() for m in MODALITIES)])
    model.train()
    if ddp:
        dist.all_reduce(sums)
    if sums[0] == 0:
        return {}
    mean = (sums[1:] / sums[0]).tolist()
    return {
        "val_loss": mean[0],
        **{f"val_loss_{m}": v for m, v in zip(MODALITIES, mean[1:], strict=True)},
    }


def _save(path, model, optimizers, loader, steps, cfg, manifest, ddp) -> None:
    """Every rank's random states gathered; rank 0 writes the checkpoint atomically.
    ``optimizers``: the MAE's and the memory's pretraining's (or None); ``steps``: the
    MAE's step and the memory's pretraining step."""
    (optimizer, memory_optimizer), (step, memory_step) = optimizers, steps
    states: list[Any] = [checkpoint.random_states()]
    if ddp:
        states = [None] * dist.get_world_size()
        dist.all_gather_object(states, checkpoint.random_states())
    if not ddp or dist.get_rank() == 0:
        checkpoint.save(
            path,
            {
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "memory_step": memory_step,
                "memory_optimizer": memory_optimizer and memory_optimizer.state_dict(),
                "loader": loader.state_dict(),
                "random": states,
                "config": asdict(cfg),
                "model_config": asdict(model.cfg),
                "geometry": asdict(model.geometry),
                "normalizer": model.normalizer.state_dict(),
                "manifest_sha256": checkpoint.manifest_hash(cfg.data),
                "format_version": manifest.format_version,
            },
        )
    if ddp:
        dist.barrier()


def _check_ranks_agree(model: HydroMAE, out: Path, main: bool) -> None:
    """All ranks must hold the same weights at the end; rank 0 records the check."""
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    total = torch.tensor([flat.sum().item(), (flat * torch.arange(flat.numel())).sum().item()])
    gathered = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    agree = all(torch.equal(g, gathered[0]) for g in gathered)
    if main:
        with open(out / METRICS, "a") as fh:
            fh.write(json.dumps({"ranks_agree": agree, "world_size": len(gathered)}) + "\n")
    if not agree:
        raise RuntimeError("DDP ranks ended with different weights")

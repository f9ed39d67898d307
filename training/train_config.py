"""The settings of a training run (``hydromae train``'s flags and TOML) and what follows
directly from them: the model, the loss's settings, the samples of a window that travel
together. Checked before any process or loader starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.loader_config import LAYOUTS
from pipeline.manifest import Manifest
from pipeline.schema import IMAGE_DTYPES, MASK_MODES, MODALITIES, READERS
from pipeline.strategies import TRAINING
from training.loss import LossConfig
from training.model import Geometry, HydroMAE
from training.model_config import DECODERS, PRESETS, ModelConfig


@dataclass
class TrainConfig:
    data: Path = field(metadata={"path": True, "metavar": "DIR", "help": "dataset directory"})
    out: Path = field(
        metadata={"path": True, "metavar": "RUN_DIR", "help": "where the run is written"}
    )
    preset: str = field(default="tiny", metadata={"choices": PRESETS})
    decoder: str = field(default="mae", metadata={"choices": DECODERS})
    cross_fraction: float = field(
        default=1.0,
        metadata={"above": 0.0, "max": 1.0, "help": "CrossMAE: share of masked tokens a step"},
    )
    mask_mode: str = field(default="unified", metadata={"choices": MASK_MODES})
    strategies: dict[str, float] = field(
        default_factory=lambda: {"seed": 1.0},
        metadata={
            "min": 0.0,
            "keys": TRAINING,
            "metavar": "NAME=WEIGHT",
            "help": "training mix of masking strategies: seed, block, withhold (images and "
            "evaporation seen, riverflow hidden every day); e.g. seed=0.5 block=0.2 withhold=0.3",
        },
    )
    reader: str = field(default="shards", metadata={"choices": READERS})
    layout: str = field(
        default="windows",
        metadata={
            "choices": LAYOUTS,
            "help": "windows: a batch carries each window's grids once (the model expands them "
            "on its device); samples: every sample's own",
        },
    )
    image_dtype: str = field(
        default="float32",
        metadata={
            "choices": IMAGE_DTYPES,
            "help": "windows layout: float16 halves the grids' bytes on the way to the device "
            "(rounded to 11 significant bits; float32 again there)",
        },
    )
    window_samples: int = field(
        default=0,
        metadata={
            "min": 0,
            "help": "samples of one window that travel together in a batch (0: as many as "
            "leave at least 4 windows a batch)",
        },
    )
    device: str = field(
        default="auto", metadata={"help": "auto (the local GPU if there is one), cpu, cuda:N"}
    )
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    shards: list[str] = field(
        default_factory=list,
        metadata={
            "metavar": "URL",
            "help": "training shards to stream instead of DATA's (paths, http(s)://, s3://, "
            "pipe:CMD; {a..b} expands); DATA must still hold manifest.json and land_mask.pt",
        },
    )
    stride: int = field(default=0, metadata={"min": 0, "help": "zarr reader: days between windows"})
    catchments_per_window: int = field(
        default=0, metadata={"min": 0, "help": "K random catchments per training window (0: all)"}
    )
    batch_size: int = field(default=8, metadata={"min": 1})
    workers: int = field(default=2, metadata={"min": 0})
    steps: int = field(default=200, metadata={"min": 1})
    lr: float = field(default=1e-3, metadata={"above": 0.0})
    warmup: int = field(default=20, metadata={"min": 0})
    weight_decay: float = field(default=0.05, metadata={"min": 0.0})
    grad_clip: float = field(default=1.0, metadata={"above": 0.0})
    accumulate: int = field(default=1, metadata={"min": 1, "help": "batches per optimizer step"})
    loss_weights: list[float] = field(
        default_factory=list,
        metadata={
            "metavar": "W",
            "min": 0.0,
            "help": "the loss's weight of each modality, in the order precip soil temp evap "
            "riverflow (none given: 1 each)",
        },
    )
    norm_pix_loss: bool = False
    flow_loss: str = field(
        default="normalised",
        metadata={
            "choices": ("normalised", "physical", "catchment"),
            "help": "riverflow's squared errors in normalised log1p units; in mm/day over "
            "the training flow's variance (physical: a pooled NSE loss, weighing floods as "
            "NSE does); or in mm/day over each catchment's own training spread (catchment: "
            "a per-catchment NSE loss, as neuralhydrology's)",
        },
    )
    memory_flow_loss: str = field(
        default="same",
        metadata={
            "choices": ("same", "normalised", "physical", "catchment"),
            "help": "the units of the memory's riverflow terms (--history-flow, "
            "--runoff-sequences), as --flow-loss's; same: those of --flow-loss",
        },
    )
    hints: bool = field(
        default=True,
        metadata={
            "help": "mask queries carry the visible values' interpolation in time and "
            "neighbours' mean (training.model); --no-hints for a plain MAE decoder"
        },
    )
    gated_mix: bool = field(
        default=False,
        metadata={
            "help": "the hints' mix (interpolation against neighbours) set per masked "
            "position by a gate on the decoder's output, instead of one mix per group"
        },
    )
    history_days: int = field(
        default=0,
        metadata={
            "min": 0,
            "help": "days of the catchment's weather before each window the encoder sees "
            "(a multiple of 5; 0: none)",
        },
    )
    memory: bool = field(
        default=False,
        metadata={
            "help": "an LSTM over the catchment's days (the history, then the window's "
            "visible weather and series) for the series' queries (training.memory)"
        },
    )
    history_flow: float = field(
        default=0.0,
        metadata={
            "min": 0.0,
            "help": "the loss's weight of the memory's riverflow on the history days (the "
            "gauge's record before each window, a target only; 0: not predicted); needs "
            "--memory and --history-days",
        },
    )
    runoff_sequences: int = field(
        default=0,
        metadata={
            "min": 0,
            "help": "rainfall-runoff sequences a step (pipeline.runoff: a gauged catchment's "
            "history_days + window days of weather, its riverflow the target on the last "
            "window days, all in the training period) on which the memory's flow head is also "
            "trained; 0: none. Needs --history-flow",
        },
    )
    runoff_forcing: float = field(
        default=0.0,
        metadata={
            "min": 0.0,
            "max": 1.0,
            "help": "the share of the rainfall-runoff sequences drawn with soil moisture "
            "withheld (the forcing strategy's question: flow from rain, temperature and "
            "evaporation alone); 0: none",
        },
    )
    runoff_weight: float = field(
        default=1.0,
        metadata={"min": 0.0, "help": "the loss's weight of the rainfall-runoff sequences"},
    )
    flow_fill: bool = field(
        default=False,
        metadata={
            "help": "the memory's riverflow on the window's days is one of riverflow's hints, "
            "weighed by the mix against interpolation; that riverflow then never reads the "
            "window's flow, and the window's days are its targets too (as the history's). "
            "Needs --history-flow and the hints"
        },
    )
    nearness: bool = field(
        default=False,
        metadata={
            "help": "the series' mask queries, and the gate with --gated-mix, carry how near "
            "the nearest visible days before and after are (training.hints), so the mix can "
            "trust interpolation beside a visible day and the memory's flow far from one"
        },
    )
    memory_detach: bool = field(
        default=False,
        metadata={
            "help": "the window's loss stops at the memory: the decoder reads the memory's "
            "states and riverflow through a stop-gradient, so the memory's LSTM learns from "
            "its own riverflow terms alone (the history's, the rainfall-runoff sequences', "
            "with --flow-fill the window's days), as a rainfall-runoff model does. Needs "
            "--history-flow"
        },
    )
    memory_pretrain_steps: int = field(
        default=0,
        metadata={
            "min": 0,
            "help": "steps of the catchment memory alone before the MAE's (training."
            "memory_pretrain): its LSTM and flow head trained on --runoff-sequences "
            "rainfall-runoff sequences a step, as a rainfall-runoff model is, so that the MAE "
            "starts from a memory that already maps weather to flow; 0: none. Needs "
            "--runoff-sequences",
        },
    )
    log_every: int = field(default=10, metadata={"min": 1})
    val_every: int = field(
        default=0, metadata={"min": 0, "help": "steps between validations (0: none)"}
    )
    val_batches: int = field(default=8, metadata={"min": 0, "help": "validation batches (0: all)"})
    checkpoint_every: int = field(default=50, metadata={"min": 1})
    seed: int = 0
    resume: bool = field(default=False, metadata={"help": "continue RUN_DIR/checkpoint.pt"})
    progress: bool = True
    tensorboard: bool = field(
        default=True, metadata={"help": "also log to TensorBoard in RUN_DIR/tensorboard"}
    )


def build_model(cfg: TrainConfig, manifest: Manifest) -> HydroMAE:
    model_cfg = ModelConfig.preset(cfg.preset)
    model_cfg.decoder = cfg.decoder
    model_cfg.cross_fraction = cfg.cross_fraction
    model_cfg.hints = cfg.hints
    model_cfg.gated_mix = cfg.gated_mix
    model_cfg.history_days = cfg.history_days
    model_cfg.memory = cfg.memory
    model_cfg.history_flow = cfg.history_flow > 0
    model_cfg.flow_fill = cfg.flow_fill
    model_cfg.nearness = cfg.nearness
    model_cfg.memory_detach = cfg.memory_detach
    if cfg.hints and cfg.norm_pix_loss:
        raise ValueError(
            "--norm-pix-loss predicts per-patch standardised targets, but the decoder's hints "
            "are in normalised units: add --no-hints"
        )
    if cfg.history_flow and not (cfg.memory and cfg.history_days):
        raise ValueError(
            "--history-flow trains the catchment memory on the days before each window: it "
            "needs --memory and --history-days"
        )
    if cfg.runoff_forcing and not cfg.runoff_sequences:
        raise ValueError(
            "--runoff-forcing is a share of the rainfall-runoff sequences: it "
            "needs --runoff-sequences (how many a step)"
        )
    for flag, used in (
        ("--runoff-sequences", cfg.runoff_sequences),
        ("--flow-fill", cfg.flow_fill),
        ("--memory-detach", cfg.memory_detach),
    ):
        if used and not cfg.history_flow:
            raise ValueError(f"{flag} uses the memory's flow head: it needs --history-flow")
    if cfg.memory_pretrain_steps and not cfg.runoff_sequences:
        raise ValueError(
            "--memory-pretrain-steps trains the memory on rainfall-runoff sequences: it needs "
            "--runoff-sequences (how many a step)"
        )
    if cfg.flow_fill and not cfg.hints:
        raise ValueError("--flow-fill makes the memory's riverflow a hint: drop --no-hints")
    if cfg.nearness and not cfg.hints:
        raise ValueError("--nearness is a feature of the hints' queries: drop --no-hints")
    if cfg.gated_mix and not cfg.hints:
        raise ValueError("--gated-mix gates the hints' mix: it needs the hints (drop --no-hints)")
    return HydroMAE(
        model_cfg, Geometry.from_manifest(manifest, cfg.mask_mode), manifest.normalizer()
    )


def loss_config(cfg: TrainConfig) -> LossConfig:
    """The loss's settings from the flags (checked before any process or loader starts)."""
    loss_cfg = LossConfig(
        norm_pix_loss=cfg.norm_pix_loss,
        flow_units=cfg.flow_loss,
        memory_flow_units=None if cfg.memory_flow_loss == "same" else cfg.memory_flow_loss,
        history_flow=cfg.history_flow,
        runoff=cfg.runoff_weight if cfg.runoff_sequences else 0.0,
    )
    if cfg.memory_flow_loss != "same" and not cfg.history_flow:
        raise ValueError(
            "--memory-flow-loss sets the units of the memory's riverflow terms: it needs "
            "--history-flow"
        )
    if cfg.loss_weights:
        if len(cfg.loss_weights) != len(MODALITIES) or min(cfg.loss_weights) < 0:
            raise ValueError(
                f"--loss-weights takes {len(MODALITIES)} weights >= 0 ({' '.join(MODALITIES)}), "
                f"got {cfg.loss_weights}"
            )
        loss_cfg.weights = dict(zip(MODALITIES, cfg.loss_weights, strict=True))
    return loss_cfg


def window_samples(cfg: TrainConfig, manifest: Manifest) -> int:
    """Samples of one window that travel together: as given, or (0) the most that divide
    the batch size, fit in a window's samples and leave at least 4 windows a batch."""
    if cfg.window_samples:
        return cfg.window_samples
    trained = len(manifest.catchments.ids) - len(manifest.catchments.holdout)
    k = cfg.catchments_per_window
    per_window = trained if k <= 0 or k >= trained else k
    most = max(1, min(per_window, cfg.batch_size // 4))
    return max(d for d in range(1, most + 1) if cfg.batch_size % d == 0)

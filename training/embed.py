"""Encoder features for downstream use (``hydromae embed --run RUN --data DATA --out FILE``).

``load_encoder(checkpoint)`` gives the trained encoder as a module: ``Encoder(batch)`` is
the mean of the encoder's output over its tokens, ``[B, D]``. ``hydromae embed`` runs it
with nothing masked (the loader's ``val`` mode: the encoder sees every valid token) over a
split and writes ``features (window, catchment, feature)`` to NetCDF (``.nc``) or Zarr
(any other suffix), keyed by window start and gauge id; NaN where a pair was not seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import Tensor, nn

from pipeline.loader import build_loader
from pipeline.manifest import Manifest
from pipeline.schema import SPLITS
from training.checkpoint import CHECKPOINT, load_model
from training.device import pick_device
from training.model import HydroMAE


class Encoder(nn.Module):
    """The trained encoder: ``forward(batch) -> [B, D]``, the mean over its output tokens."""

    def __init__(self, model: HydroMAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> Tensor:
        h = self.model.forward_encoder(batch).h  # [B, 1 + S_visible, D]
        return h.mean(dim=1)


def load_encoder(checkpoint_path: str | Path, data: str | Path | None = None) -> Encoder:
    """The encoder of a checkpoint (checked against ``data``'s manifest when given)."""
    path = Path(checkpoint_path)
    model, _ = load_model(path.parent, Path(data) if data else None, path.name)
    return Encoder(model).eval()


@dataclass
class EmbedConfig:
    run: Path = field(metadata={"path": True, "metavar": "RUN_DIR"})
    data: Path = field(metadata={"path": True, "metavar": "DIR"})
    out: Path = field(
        metadata={"path": True, "metavar": "FILE", "help": ".nc for NetCDF, else Zarr"}
    )
    split: str = field(default="val", metadata={"choices": SPLITS})
    batch_size: int = field(default=8, metadata={"min": 1})
    workers: int = field(default=0, metadata={"min": 0})
    device: str = field(
        default="auto", metadata={"help": "auto (the GPU if there is one), cpu, cuda:N"}
    )


def embed(cfg: EmbedConfig) -> xr.Dataset:
    manifest = Manifest.read(cfg.data)
    encoder = load_encoder(Path(cfg.run) / CHECKPOINT, cfg.data).to(pick_device(cfg.device))
    state_cfg = encoder.model.geometry
    loader = build_loader(
        source=str(cfg.data), split=cfg.split, mode="val", batch_size=cfg.batch_size,
        num_workers=cfg.workers, mask_mode=state_cfg.mask_mode, rank=0, world_size=1,
        history_days=encoder.model.cfg.history_days,
    )  # fmt: skip
    starts = [s.isoformat() for s in manifest.split(cfg.split).window_starts]
    ids = list(manifest.catchments.ids)
    features = np.full((len(starts), len(ids), encoder.model.cfg.dim), np.nan, dtype=np.float32)
    where = {s: i for i, s in enumerate(starts)}
    with torch.inference_mode():
        for batch in loader:
            pooled = encoder(batch).float().cpu().numpy()  # [B, D]
            for b in np.flatnonzero(batch["weight"].numpy() > 0):
                features[where[batch["start"][b]], int(batch["catchment_index"][b])] = pooled[b]
    ds = xr.Dataset(
        {"features": (("window", "catchment", "feature"), features)},
        coords={
            "window": pd.DatetimeIndex(starts),
            "catchment": np.array(ids, dtype=object),
            "feature": np.arange(features.shape[-1]),
        },
        attrs={"split": cfg.split, "run": str(cfg.run), "window_days": manifest.window},
    )
    ds["window"].attrs["long_name"] = "first day of the window"
    ds["features"].attrs["long_name"] = "mean of the encoder's output tokens, nothing masked"
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".nc":
        ds.to_netcdf(out)
    else:
        ds.to_zarr(out, mode="w", zarr_format=3, consolidated=False)
    print(f"wrote {out}: {np.isfinite(features[..., 0]).sum()} (window, catchment) features")
    return ds

"""Where the model runs: the device a command picks, and batches moved onto it.

``auto`` is this process's GPU (``cuda:LOCAL_RANK`` under torchrun) when there is one, else
the CPU. Batches from the loader lie in recycled host buffers, page-locked on a GPU host
(``pipeline.buffers.PinnedBuffers``), so the copy is non-blocking.
"""

from __future__ import annotations

from typing import Any

import torch


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU (``cuda:LOCAL_RANK``) if there is one, else the CPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: there is no CUDA device here")
    return device


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on ``device`` (non-blocking from pinned memory); lists stay."""
    if device.type == "cpu":
        return batch
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }

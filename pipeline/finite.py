"""The collate's one validity rule: a value is valid iff it is finite (after the cast to
float32) and on land; invalid values are written as +0.0.

Used for images (with the land of the valid patches) and for the series and static
attributes (no land). Three passes over the data: ``isfinite``, the land, one
``torch.where`` (``docs/benchmarks.md`` has the timing).
"""

from __future__ import annotations

import numpy as np
import torch


def finite_into(
    x: np.ndarray, data: np.ndarray, valid: np.ndarray, land: np.ndarray | None = None
) -> None:
    """Write ``x``'s values into ``data`` (float32) and its validity into ``valid`` (bool),
    both of ``x``'s shape: ``valid`` = finite after the cast to float32 (and ``land``,
    broadcast, where given); ``data`` = the value where valid, else +0.0. ``x`` may be
    ``data`` itself.
    """
    if x.dtype != np.float32 or not x.flags.writeable:  # torch wraps writable arrays only
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: not valid
            np.copyto(data, x, casting="unsafe")
        x = data
    np.isfinite(x, out=valid)
    if land is not None:
        valid &= land
    zero = torch.zeros((), dtype=torch.float32)
    torch.where(torch.from_numpy(valid), torch.from_numpy(x), zero, out=torch.from_numpy(data))


def finite_values(x: np.ndarray, land: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`finite_into` into new arrays: (float32 data, bool valid)."""
    data, valid = np.empty(x.shape, np.float32), np.empty(x.shape, bool)
    finite_into(x, data, valid, land)
    return data, valid


def prepare_image(part: torch.Tensor, land: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One sample's image made finite: ``[T, N, p*p]`` any float -> (float32 data, bool valid),
    with ``land [N, p*p]`` (bool, broadcast over days).
    """
    return finite_values(part.detach().to("cpu", torch.float32).numpy(), land)

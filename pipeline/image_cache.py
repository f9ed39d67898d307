"""Prepared images kept while their source array lives, so a window is made finite once.

The loader expands a window to K samples that share its image arrays, and spreads them
over the shuffle buffer's batches. The collate makes each distinct source array finite
and on land once (``pipeline.finite``) and keeps the result here, keyed by the source's
``id`` and held by a weak reference: when the source is collected, its prepared image is
dropped. A source must not be modified in place while it lives (the loader's windows never
are); a source without weak references (e.g. a list) is prepared again at every call.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import numpy as np
import torch

from pipeline.finite import prepare_image

# (the source array or a weak reference to it, data float32, valid bool)
Prepared = tuple[Any, np.ndarray, np.ndarray]


class ImageCache:
    """Prepared images of source arrays: within one collate call, and (``keep=True``)
    across calls for as long as each source lives."""

    def __init__(self, keep: bool) -> None:
        self.keep = bool(keep)
        self._kept: dict[int, Prepared] = {}

    def __len__(self) -> int:
        """Prepared images kept across calls (one per live source array)."""
        return len(self._kept)

    def __getstate__(self) -> dict[str, Any]:
        return {"keep": self.keep, "_kept": {}}  # weak references do not travel

    def kept(self, source: Any) -> Prepared | None:
        """The prepared image of ``source`` kept from an earlier call, if any."""
        hit = self._kept.get(id(source)) if self.keep else None
        return hit if hit is not None and hit[0]() is source else None

    def prepared(
        self,
        part: torch.Tensor | None,
        source: Any,
        seen: dict[int, Prepared],
        land: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``prepare_image(part, land)``, done once per source array.

        ``source`` is the sample's own array, which ``part`` (``[T, N, p*p]``) is made from
        (a view, or a copy for full grids and patch selections), and identifies it:
        ``seen`` holds this call's (the samples keep their sources alive meanwhile).
        ``part`` is None only for a source kept from an earlier call.
        """
        key = id(source)
        hit = seen.get(key) or self.kept(source)
        if hit is None:
            assert part is not None
            hit = (source, *prepare_image(part, land))
            if self.keep:
                try:
                    ref = weakref.ref(source, functools.partial(self._forget, key))
                except TypeError:
                    pass
                else:
                    self._kept[key] = (ref, hit[1], hit[2])
        seen[key] = hit
        return hit[1], hit[2]

    def _forget(self, key: int, ref: weakref.ref) -> None:
        """A source array died: drop its prepared image (unless the key was taken again)."""
        kept = self._kept.get(key)
        if kept is not None and kept[0] is ref:
            del self._kept[key]

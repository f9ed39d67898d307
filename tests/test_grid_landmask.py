"""Grid geometry, patch numbering and the land-mask patch table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL_H, SMALL_P, SMALL_VALID, SMALL_W, small_land_mask

from pipeline import PatchGrid, PatchTable, load_land_mask, patchify, save_land_mask, unpatchify
from pipeline.landmask import reference_mask_path


def test_patch_numbering_is_row_major_from_the_south():
    grid = PatchGrid(290, 180, 10)
    assert (grid.rows, grid.cols, grid.num_patches) == (29, 18, 522)
    x = np.arange(290 * 180).reshape(290, 180)
    patches = patchify(x, grid)
    assert patches.shape == (522, 10, 10)
    # patch = row_block * (W/p) + col_block; row 0 is the first stored (southern) row
    for patch in (0, 1, 17, 18, 521):
        r, c = grid.patch_row_col(patch)
        np.testing.assert_array_equal(patches[patch], x[r * 10 : r * 10 + 10, c * 10 : c * 10 + 10])


def test_patchify_round_trips_for_numpy_and_torch():
    grid = PatchGrid(40, 30, 10)
    x = np.random.default_rng(0).normal(size=(2, 5, 40, 30))
    for arr in (x, torch.from_numpy(x)):
        p = patchify(arr, grid)
        assert tuple(p.shape) == (2, 5, 12, 10, 10)
        back = unpatchify(p, grid)
        assert type(back) is type(arr)
        np.testing.assert_array_equal(np.asarray(back), x)


def test_grid_must_divide_into_patches():
    with pytest.raises(ValueError, match="not divisible"):
        PatchGrid(295, 180, 10)
    with pytest.raises(ValueError, match="spatial shape"):
        patchify(np.zeros((10, 20)), PatchGrid(40, 30, 10))


def test_reference_mask_table_matches_its_provenance():
    mask = load_land_mask(reference_mask_path(), PatchGrid())
    s = PatchTable.from_mask(mask, PatchGrid(), 0.5).summary()
    assert (s["fully_ocean"], s["partially_land"], s["fully_land"], s["valid"]) == (
        367,
        103,
        52,
        94,
    )
    assert s["land_cells"] == 10055


def test_small_grid_table_counts_fractions_exactly():
    grid = PatchGrid(SMALL_H, SMALL_W, SMALL_P)
    table = PatchTable.from_mask(small_land_mask(), grid, 0.5)
    assert table.valid_patch_indices.tolist() == SMALL_VALID  # 50 of 100 is valid, 49 is not
    s = table.summary()
    assert (s["fully_ocean"], s["partially_land"], s["fully_land"]) == (3, 5, 4)
    assert PatchTable.from_mask(small_land_mask(), grid, 0.0).valid_patch_indices.tolist() == [
        0, 1, 2, 4, 5, 6, 7, 9, 10,
    ]  # fmt: skip
    assert PatchTable.from_mask(small_land_mask(), grid, 1.0).valid_patch_indices.tolist() == [
        0, 4, 7, 10,
    ]  # fmt: skip
    # a threshold that is not a whole number of cells still compares exactly
    assert 1 not in PatchTable.from_mask(small_land_mask(), grid, 0.501).valid_patch_indices


def test_save_and_load_both_formats(tmp_path):
    mask = small_land_mask()
    npy, pt = save_land_mask(mask, tmp_path / "out")
    np.testing.assert_array_equal(load_land_mask(npy), mask)
    loaded = torch.load(pt, weights_only=True)
    assert loaded.dtype == torch.bool and tuple(loaded.shape) == mask.shape
    np.testing.assert_array_equal(load_land_mask(pt), mask)
    assert not list((tmp_path / "out").glob("*.tmp"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.zeros((3, 4, 5), dtype=bool), "2-D"),
        (np.full((4, 5), 2.0), "other than 0/1"),
    ],
)
def test_bad_masks_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(ValueError, match=message):
        load_land_mask(path)


def test_mask_of_the_wrong_shape_names_the_file(tmp_path):
    path = tmp_path / "wrong.npy"
    np.save(path, np.ones((100, 100), dtype=bool))
    with pytest.raises(ValueError, match=r"wrong\.npy.*\(100, 100\).*\(290, 180\)"):
        load_land_mask(path, PatchGrid())


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_threshold_outside_unit_interval_is_refused(threshold):
    with pytest.raises(ValueError, match=r"land_threshold must lie in \[0, 1\]"):
        PatchTable.from_mask(small_land_mask(), PatchGrid(40, 30, 10), threshold)

"""The seed's masking collate: counts, modes, keys, uniformity, NaN, layouts, errors."""

from __future__ import annotations

import gc
import itertools
import pickle

import numpy as np
import pytest
import torch
from conftest import SMALL_H, SMALL_P, SMALL_VALID, SMALL_W, small_land_mask
from scipy import stats

from pipeline import MultiScaleMaskedCollate, PatchGrid, PatchTable, patchify
from pipeline.collate import expand_windows
from pipeline.finite import finite_values
from pipeline.landmask import reference_mask_path
from pipeline.masking import masked_count, top_mask
from pipeline.schema import IMAGE_MODALITIES, MODALITIES, VECTOR_MODALITIES

T_SMALL = 12


def small_collate(path, **kw) -> MultiScaleMaskedCollate:
    args = dict(
        seq_len=T_SMALL,
        patch_size=SMALL_P,
        image_height=SMALL_H,
        image_width=SMALL_W,
        land_mask_path=path,
    )
    args.update(kw)
    return MultiScaleMaskedCollate(**args)


def grid_sample(collate, rng, key=None, days=None, nan_frac=0.0) -> dict:
    """A sample in the seed's layout: full grids, NaN over sea and at random land cells."""
    days = days or collate.seq_len
    g = collate.grid
    sample = {}
    for name in IMAGE_MODALITIES:
        x = rng.normal(size=(days, g.height, g.width)).astype(np.float32)
        x[:, ~collate.land_mask] = np.nan
        x[rng.random(x.shape) < nan_frac] = np.nan
        sample[name] = x
    for name in VECTOR_MODALITIES:
        v = rng.normal(size=days).astype(np.float32)
        v[rng.random(days) < nan_frac] = np.nan
        sample[name] = v
    if key is not None:
        sample["sample_key"] = key
    return sample


def patch_sample(collate, grid_sample_: dict, patch_indices) -> dict:
    """The same sample in the dataset layout: ``[T, N_in, p, p]`` patches."""
    out = dict(grid_sample_)
    for name in IMAGE_MODALITIES:
        out[name] = patchify(grid_sample_[name], collate.grid)[:, patch_indices]
    return out


@pytest.fixture(scope="module")
def gb() -> MultiScaleMaskedCollate:
    return MultiScaleMaskedCollate(land_mask_path=reference_mask_path(), seed=3)


# ----------------------------------------------------------------- counts and shapes
def test_exact_counts_on_the_reference_mask(gb):
    assert (gb.num_valid, gb.n_mask_patches, gb.n_mask_days) == (94, 70, 67)
    masks = gb.generate_masks(16)
    for name in IMAGE_MODALITIES:
        m = masks[f"{name}_mask"]
        assert m.shape == (16, 90, 522) and m.dtype == torch.bool
        assert (m.sum(-1) == 70).all()  # every day: 70 masked, 24 visible
    for name in VECTOR_MODALITIES:
        m = masks[f"{name}_mask"]
        assert m.shape == (16, 90) and (m.sum(-1) == 67).all()


def test_exact_counts_on_a_small_grid(small_mask_path):
    c = small_collate(small_mask_path, mask_ratio=0.6)
    batch = c([grid_sample(c, np.random.default_rng(0), f"k{i}") for i in range(5)])
    assert c.num_valid == 7
    assert (batch["temp_mask"].sum(-1) == masked_count(7, 0.6)).all()  # 4 of 7
    assert (batch["evap_mask"].sum(-1) == masked_count(T_SMALL, 0.6)).all()  # 7 of 12
    assert batch["precip"].shape == (5, T_SMALL, 7, 100)


def test_floor_has_a_tolerance():
    assert masked_count(100, 0.29) == 29  # int(0.29 * 100) would give 28
    assert masked_count(94, 0.75) == 70 and masked_count(90, 0.75) == 67


def test_top_mask_takes_the_largest_exactly_even_with_ties():
    rng = np.random.default_rng(3)
    noise = torch.from_numpy(rng.random((4, 6, 94)))
    noise[0, :2] = torch.from_numpy(rng.integers(0, 3, (2, 94)).astype(np.float64))  # ties
    noise[1, 0] = 0.5  # a whole row tied
    columns = torch.from_numpy(np.sort(rng.choice(522, 94, replace=False)))
    mask = top_mask(noise, 70, columns, 522)  # [4, 6, 522]
    assert mask.shape == (4, 6, 522) and (mask.sum(-1) == 70).all()
    assert not mask[..., np.setdiff1d(np.arange(522), columns.numpy())].any()
    picked = mask[..., columns]  # [4, 6, 94]
    low = torch.where(picked, noise, torch.inf).amin(-1)
    high = torch.where(picked, -torch.inf, noise).amax(-1)
    assert (low >= high).all()  # every masked value is at least every visible one
    untied = torch.equal(picked[2:], noise[2:] >= noise[2:].sort(-1).values[..., 24:25])
    assert untied  # without ties: exactly the values above the 24th smallest
    assert (top_mask(noise[..., :90], 67).sum(-1) == 67).all()  # no columns: [4, 6, 90]


def test_finite_rule_casts_first_and_writes_plus_zero():
    x = np.array([[1.0, -2.0, np.nan], [1e39, -np.inf, -3.0]])  # float64; 1e39 is inf in float32
    land = np.array([True, True, False])
    data, valid = finite_values(x, land)
    assert data.dtype == np.float32 and valid.tolist() == [[True, True, False], [False] * 3]
    assert data.tolist() == [[1.0, -2.0, 0.0], [0.0, 0.0, 0.0]]
    assert not np.signbit(data[~valid]).any()  # +0.0, also where the value was negative
    with np.errstate(over="ignore"):
        frozen = x.astype(np.float32)
    frozen.flags.writeable = False  # read-only input (torch cannot wrap it)
    again, ok = finite_values(frozen, land)
    assert np.array_equal(again, data) and np.array_equal(ok, valid)


def test_ocean_patches_are_never_masked(gb):
    masks = gb.generate_masks(32)
    invalid = np.setdiff1d(np.arange(522), gb.valid_patch_indices.numpy())
    for name in IMAGE_MODALITIES:
        assert not masks[f"{name}_mask"][..., invalid].any()


# ----------------------------------------------------------------- modes
def test_unified_shares_masks_and_independent_does_not(small_mask_path):
    rng = np.random.default_rng(1)
    samples = [grid_sample(small_collate(small_mask_path), rng, f"k{i}") for i in range(4)]
    uni = small_collate(small_mask_path, mask_mode="unified")(samples)
    assert torch.equal(uni["precip_mask"], uni["soil_mask"])
    assert torch.equal(uni["precip_mask"], uni["temp_mask"])
    assert torch.equal(uni["evap_mask"], uni["riverflow_mask"])
    ind = small_collate(small_mask_path, mask_mode="independent")(samples)
    assert not torch.equal(ind["precip_mask"], ind["soil_mask"])
    assert not torch.equal(ind["soil_mask"], ind["temp_mask"])
    assert not torch.equal(ind["evap_mask"], ind["riverflow_mask"])
    for name in IMAGE_MODALITIES:
        assert (ind[f"{name}_mask"].sum(-1) == masked_count(7, 0.75)).all()


def test_val_masks_nothing(gb):
    val = MultiScaleMaskedCollate(mode="val")
    masks = val.generate_masks(4)
    assert not any(m.any() for m in masks.values())
    batch = val([grid_sample(val, np.random.default_rng(0), "a")])
    assert not any(batch[f"{m}_mask"].any() for m in MODALITIES)


def test_eval_masks_are_the_same_every_time_and_every_epoch(small_mask_path):
    rng = np.random.default_rng(2)
    c = small_collate(small_mask_path, mode="eval", seed=5)
    samples = [grid_sample(c, rng, f"w{i}") for i in range(3)]
    first = c(samples)
    c.set_epoch(7)
    again = small_collate(small_mask_path, mode="eval", seed=5)(samples)
    for name in MODALITIES:
        assert torch.equal(first[f"{name}_mask"], c(samples)[f"{name}_mask"])
        assert torch.equal(first[f"{name}_mask"], again[f"{name}_mask"])


def test_train_masks_change_with_the_epoch_and_repeat_within_it(small_mask_path):
    rng = np.random.default_rng(3)
    c = small_collate(small_mask_path, seed=5)
    samples = [grid_sample(c, rng, f"w{i}") for i in range(3)]
    c.set_epoch(0)
    e0 = c(samples)["precip_mask"]
    assert torch.equal(e0, c(samples)["precip_mask"])  # keyed, not a running stream
    c.set_epoch(1)
    assert not torch.equal(e0, c(samples)["precip_mask"])


def test_same_seed_same_masks_other_seed_other_masks(small_mask_path):
    rng = np.random.default_rng(4)
    samples = [grid_sample(small_collate(small_mask_path), rng, f"s{i}") for i in range(4)]
    a = small_collate(small_mask_path, seed=11)(samples)
    b = small_collate(small_mask_path, seed=11)(samples)
    other = small_collate(small_mask_path, seed=12)(samples)
    for name in MODALITIES:
        assert torch.equal(a[f"{name}_mask"], b[f"{name}_mask"])
    assert not torch.equal(a["precip_mask"], other["precip_mask"])
    assert not torch.equal(a["evap_mask"], other["evap_mask"])
    # samples without a key draw from the collate's seeded generator: same seed, same masks
    gen_a = small_collate(small_mask_path, seed=11).generate_masks(3)
    gen_b = small_collate(small_mask_path, seed=11).generate_masks(3)
    assert torch.equal(gen_a["temp_mask"], gen_b["temp_mask"])


def test_a_samples_masks_do_not_depend_on_its_batch(small_mask_path):
    rng = np.random.default_rng(5)
    c = small_collate(small_mask_path, mask_mode="independent", seed=2)
    target = grid_sample(c, rng, "target")
    others = [grid_sample(c, rng, f"o{i}") for i in range(6)]
    alone = c([target])
    in_batch = c([others[0], others[1], target, others[2]])
    other_batch = c([*others[3:], target])
    for name in MODALITIES:
        key = f"{name}_mask"
        assert torch.equal(alone[key][0], in_batch[key][2])
        assert torch.equal(alone[key][0], other_batch[key][3])


def test_masks_do_not_depend_on_dataloader_workers(small_mask_path):
    c = small_collate(small_mask_path, seed=9)
    rng = np.random.default_rng(6)
    samples = [grid_sample(c, rng, f"d{i}") for i in range(8)]
    pickle.loads(pickle.dumps(c))  # workers receive a pickled copy

    def masks(workers: int) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(
            samples, batch_size=2, collate_fn=c, num_workers=workers, shuffle=False
        )
        return torch.cat([b["precip_mask"] for b in loader])

    assert torch.equal(masks(0), masks(2))


# ----------------------------------------------------------------- uniformity
def test_each_valid_patch_and_each_day_is_masked_uniformly(gb):
    c = MultiScaleMaskedCollate(seed=21)
    masks = c.generate_masks(400)  # 36,000 day-draws of 70 of 94 patches
    valid = c.valid_patch_indices
    per_patch = masks["precip_mask"][..., valid].sum(dim=(0, 1)).numpy()
    assert stats.chisquare(per_patch).pvalue > 1e-3
    per_day = masks["evap_mask"].sum(dim=0).numpy()  # 400 draws of 67 of 90 days
    assert stats.chisquare(per_day).pvalue > 1e-3


def test_pairs_are_masked_together_as_often_as_uniform_draws_predict():
    c = MultiScaleMaskedCollate(seed=22)
    m = c.generate_masks(200)["temp_mask"][..., c.valid_patch_indices].reshape(-1, 94).double()
    rows, n, k = m.shape[0], 94, 70
    together = (m.T @ m).numpy()[np.triu_indices(n, 1)]  # co-masked counts, one per pair
    q = k * (k - 1) / (n * (n - 1))
    z = (together - rows * q) / np.sqrt(rows * q * (1 - q))
    assert np.abs(z).max() < 5.0
    # and as a chi-square over all 4,371 pairs (dependence makes this a looser check)
    assert stats.chisquare(together).pvalue > 1e-4


def test_whole_subsets_are_exactly_uniform(small_mask_path):
    """On 7 valid patches with 4 masked, all 35 subsets are equally likely (every order)."""
    c = small_collate(small_mask_path, mask_ratio=0.6, seed=23)
    m = c.generate_masks(500)["precip_mask"][..., c.valid_patch_indices].reshape(-1, 7)
    codes = (m.long() * (2 ** torch.arange(7))).sum(-1).numpy()
    subsets = [sum(2**i for i in s) for s in itertools.combinations(range(7), 4)]
    counts = np.array([(codes == s).sum() for s in subsets])
    assert counts.sum() == len(codes)  # nothing outside the 35 subsets
    assert stats.chisquare(counts).pvalue > 1e-3
    days = small_collate(small_mask_path, seq_len=6, mask_ratio=0.5, seed=24)
    d = days.generate_masks(4000)["riverflow_mask"]  # 3 of 6 days: 20 subsets
    codes = (d.long() * (2 ** torch.arange(6))).sum(-1).numpy()
    counts = np.array(
        [(codes == sum(2**i for i in s)).sum() for s in itertools.combinations(range(6), 3)]
    )
    assert counts.sum() == len(codes) and stats.chisquare(counts).pvalue > 1e-3


# ----------------------------------------------------------------- data handling
def test_full_grid_and_patch_inputs_give_identical_outputs(small_mask_path):
    c = small_collate(small_mask_path, seed=4)
    rng = np.random.default_rng(7)
    grids = [grid_sample(c, rng, f"g{i}", nan_frac=0.05) for i in range(3)]
    from_grid = c(grids)
    from_patches = c([patch_sample(c, g, SMALL_VALID) for g in grids])
    for key, value in from_grid.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, from_patches[key]), key
        else:
            assert value == from_patches[key]


def test_patch_indices_may_hold_more_than_the_valid_patches(small_mask_path):
    land = PatchTable.from_mask(small_land_mask(), PatchGrid(40, 30, 10)).land_patch_indices
    rng = np.random.default_rng(8)
    plain = small_collate(small_mask_path, seed=4)
    wide = small_collate(small_mask_path, seed=4, patch_indices=land)
    grids = [grid_sample(plain, rng, f"g{i}") for i in range(2)]
    weights = [rng.random(len(land)).astype(np.float32) for _ in grids]
    a = plain([{**patch_sample(plain, g, SMALL_VALID)} for g in grids])
    b = wide(
        [
            {**patch_sample(wide, g, land), "catchment_weight": w}
            for g, w in zip(grids, weights, strict=True)
        ]
    )
    for name in IMAGE_MODALITIES:
        assert torch.equal(a[name], b[name]) and torch.equal(a[f"{name}_mask"], b[f"{name}_mask"])
    sel = np.searchsorted(land, SMALL_VALID)
    np.testing.assert_array_equal(b["catchment_weight"].numpy(), np.stack(weights)[:, sel])


def test_nan_never_reaches_the_output_and_is_marked_invalid(small_mask_path):
    c = small_collate(small_mask_path)
    rng = np.random.default_rng(9)
    samples = [grid_sample(c, rng, f"n{i}", nan_frac=0.2) for i in range(3)]
    samples[0]["static"] = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    samples[1]["static"] = samples[2]["static"] = np.ones(3, dtype=np.float32)
    samples[1]["precip"][0, 0, 0] = np.inf  # a land cell (patch 0 is all land)
    samples[2]["evap"][0] = -np.inf
    batch = c(samples)
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.isfinite(value).all(), key
    land = torch.from_numpy(patchify(small_land_mask(), c.grid)[SMALL_VALID].reshape(7, 100))
    for name in IMAGE_MODALITIES:
        raw = torch.stack(
            [
                torch.from_numpy(patchify(s[name], c.grid)[:, SMALL_VALID].reshape(T_SMALL, 7, 100))
                for s in samples
            ]
        )
        expected_valid = torch.isfinite(raw) & land  # inf is not valid either
        assert torch.equal(batch[f"{name}_valid"], expected_valid)
        assert (batch[name][~expected_valid] == 0).all()
        assert torch.equal(batch[name][expected_valid], raw[expected_valid])
        assert not batch[f"{name}_valid"][..., ~land].any()  # sea pixels never valid
    for name in VECTOR_MODALITIES:
        raw = torch.stack([torch.from_numpy(s[name]) for s in samples])
        assert torch.equal(batch[f"{name}_valid"], torch.isfinite(raw))
    assert batch["static_valid"][0].tolist() == [True, False, True]


def test_values_on_sea_pixels_are_not_valid(small_mask_path):
    """A modality with its own coastline (values over sea) still only counts land pixels."""
    c = small_collate(small_mask_path)
    s = grid_sample(c, np.random.default_rng(10), "sea")
    s["soil"] = np.ones_like(s["soil"])  # values everywhere, also at sea
    batch = c([s])
    land = torch.from_numpy(patchify(small_land_mask(), c.grid)[SMALL_VALID].reshape(7, 100))
    assert torch.equal(batch["soil_valid"][0, 0], land)
    assert (batch["soil"][0][..., ~land] == 0).all()


def test_longer_samples_are_truncated(small_mask_path):
    c = small_collate(small_mask_path, seed=1)
    rng = np.random.default_rng(11)
    long = grid_sample(c, rng, "long", days=T_SMALL + 5)
    long["doy"] = np.arange(1, T_SMALL + 6, dtype=np.int16)
    short = {k: (v[:T_SMALL] if k != "sample_key" else v) for k, v in long.items()}
    a, b = c([long]), c([short])
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
    assert a["precip"].shape[1] == T_SMALL and a["doy"].shape == (1, T_SMALL)


def test_schema_fields_are_stacked(small_mask_path):
    c = small_collate(small_mask_path)
    rng = np.random.default_rng(12)
    samples = []
    for i in range(3):
        s = patch_sample(c, grid_sample(c, rng, f"2000010{i}-g{i}"), SMALL_VALID)
        s.update(
            static=np.arange(4, dtype=np.float32),
            catchment_weight=np.full(7, 1 / 7, dtype=np.float32),
            catchment_index=i,
            doy=np.arange(1, T_SMALL + 1, dtype=np.int16),
            start=f"2000-01-0{i + 1}",
        )
        samples.append(s)
    b = c(samples)
    assert b["static"].shape == (3, 4) and b["catchment_weight"].shape == (3, 7)
    assert b["catchment_index"].tolist() == [0, 1, 2] and b["catchment_index"].dtype == torch.long
    assert b["doy"].dtype == torch.int16 and b["doy"].shape == (3, T_SMALL)
    assert b["sample_key"] == ["20000100-g0", "20000101-g1", "20000102-g2"]
    assert b["valid_patch_indices"].tolist() == SMALL_VALID


# ----------------------------------------------------------------- errors
def test_bad_configuration_gives_clear_errors(small_mask_path, tmp_path):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((50, 50), dtype=bool))
    with pytest.raises(ValueError, match=r"wrong\.npy.*\(50, 50\)"):
        small_collate(wrong)
    with pytest.raises(ValueError, match=r"land_threshold must lie in \[0, 1\]"):
        small_collate(small_mask_path, land_threshold=1.2)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\).*leaves no visible patch"):
        small_collate(small_mask_path, mask_ratio=1.0)
    with pytest.raises(ValueError, match=r"masks 7 of 7 valid patches.*at least one visible"):
        small_collate(small_mask_path, mask_ratio=1 - 1e-12)  # within the floor's tolerance
    with pytest.raises(ValueError, match=r"patch_indices lack 1 patch.*\[5\]"):
        small_collate(small_mask_path, patch_indices=[0, 1, 4, 7, 9, 10])
    with pytest.raises(ValueError, match="mask_mode"):
        small_collate(small_mask_path, mask_mode="joint")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        small_collate(tmp_path / "missing.pt")


def test_bad_samples_name_the_sample_and_the_field(small_mask_path):
    c = small_collate(small_mask_path)
    rng = np.random.default_rng(13)
    s = grid_sample(c, rng, "bad-one")
    del s["riverflow"]
    with pytest.raises(ValueError, match=r"'bad-one'.*riverflow"):
        c([s])
    s = grid_sample(c, rng, "short", days=T_SMALL - 1)
    with pytest.raises(ValueError, match=r"'short'.*11 days, fewer than seq_len=12"):
        c([s])
    s = grid_sample(c, rng, "shape")
    s["temp"] = s["temp"][:, :20]
    with pytest.raises(ValueError, match=r"'shape'.*'temp'"):
        c([s])


# ----------------------------------------------------------------- reuse and allocation
def window_samples(c, rng, windows=2, k=3) -> list[dict]:
    """``k`` samples per window sharing its image arrays (as the loader's expansion does)."""
    out = []
    for w in range(windows):
        base = patch_sample(c, grid_sample(c, rng, nan_frac=0.1), SMALL_VALID)
        for j in range(k):
            own = grid_sample(c, rng, f"w{w}-{j}", nan_frac=0.1)
            out.append({**own, **{n: base[n] for n in IMAGE_MODALITIES}})
    return out


def assert_same_batch(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
            assert torch.equal(value.view(torch.uint8), b[key].view(torch.uint8)), key  # bits
        else:
            assert value == b[key], key


def test_reused_images_and_given_memory_give_the_same_batch(small_mask_path):
    """Shared windows are prepared once (and kept while they live); output is unchanged."""
    rng = np.random.default_rng(14)
    plain = small_collate(small_mask_path, seed=5)
    reuse = small_collate(small_mask_path, seed=5, reuse_images=True)
    samples = window_samples(plain, rng)
    copies = [{**s, **{n: s[n].copy() for n in IMAGE_MODALITIES}} for s in samples]
    expected = plain(copies)  # no array shared
    for order in (range(6), range(5, -1, -1), range(1, 4)):
        batch = [samples[i] for i in order]
        assert_same_batch(reuse(batch), plain([copies[i] for i in order]))
    assert len(reuse.images) == 2 * len(IMAGE_MODALITIES)  # one per window and modality
    given: dict[str, torch.Tensor] = {}

    def allocate(spec):
        for name, (shape, dtype) in spec.items():
            given[name] = torch.full(shape, 7, dtype=dtype)  # not zeros: every byte written
        return dict(given)

    into = reuse(samples, allocate=allocate)
    assert_same_batch(into, expected)
    tensors = [k for k, v in expected.items() if isinstance(v, torch.Tensor)]
    assert sorted(given) == sorted(tensors)
    assert all(into[k] is given[k] for k in tensors)
    del samples, batch, into
    gc.collect()
    assert not reuse.images  # forgotten with their windows


# ----------------------------------------------------------------- strategies
MIX = {"seed": 0.3, "block": 0.2, "withhold": 0.15, "ungauged": 0.2, "forcing": 0.15}


def test_strategy_draw_is_keyed_whatever_the_batch(small_mask_path):
    """Each sample's strategy (and its masks) depends on (seed, epoch, sample_key) only."""
    rng = np.random.default_rng(3)
    c = small_collate(small_mask_path, seed=9, strategies=MIX)
    samples = [grid_sample(c, rng, key=f"k{i}") for i in range(32)]
    c.set_epoch(2)
    whole = c(samples)
    assert set(whole["strategy"]) == set(MIX)  # 32 samples draw every strategy
    alone = [c([s]) for s in samples[::-1]]
    for i, one in enumerate(alone[::-1]):
        assert one["strategy"] == [whole["strategy"][i]]
        for m in (*IMAGE_MODALITIES, *VECTOR_MODALITIES):
            assert torch.equal(one[f"{m}_mask"][0], whole[f"{m}_mask"][i]), (i, m)
    c.set_epoch(3)
    assert c(samples)["strategy"] != whole["strategy"]  # a new epoch, new draws


def test_each_strategy_hides_what_it_says(small_mask_path):
    rng = np.random.default_rng(4)
    c = small_collate(small_mask_path, seed=1, strategies=MIX)
    plain = small_collate(small_mask_path, seed=1)
    samples = [grid_sample(c, rng, key=f"k{i}") for i in range(30)]
    batch, seed_masks = c(samples), plain(samples)
    valid = torch.tensor(SMALL_VALID)
    n_days = masked_count(T_SMALL, 0.75)
    for i, name in enumerate(batch["strategy"]):
        image, evap = batch["precip_mask"][i], batch["evap_mask"][i]
        flow = batch["riverflow_mask"][i]
        if name == "seed":  # the specification's masks, as drawn without a mix
            for m in (*IMAGE_MODALITIES, *VECTOR_MODALITIES):
                assert torch.equal(batch[f"{m}_mask"][i], seed_masks[f"{m}_mask"][i])
        elif name == "block":  # images as the seed's; one contiguous block of days
            assert torch.equal(image, seed_masks["precip_mask"][i])
            days = torch.nonzero(evap)[:, 0]
            assert len(days) == n_days and days[-1] - days[0] == n_days - 1
            assert torch.equal(evap, flow)
        elif name == "ungauged":  # images and evaporation as the seed's; no flow day seen
            assert torch.equal(image, seed_masks["precip_mask"][i])
            assert torch.equal(evap, seed_masks["evap_mask"][i]) and flow.all()
            assert torch.equal(batch["riverflow_valid"][i], seed_masks["riverflow_valid"][i])
        else:  # withhold, forcing: images and evaporation seen, riverflow hidden every day
            assert name in ("withhold", "forcing")
            assert not image[:, valid].any() and not evap.any() and flow.all()
        # forcing's soil moisture is withheld by the model (pipeline.strategies.withhold)
        assert torch.equal(batch["soil_valid"][i], seed_masks["soil_valid"][i])
        assert not image[:, [p for p in range(12) if p not in SMALL_VALID]].any()  # ocean


def test_a_compact_batch_carries_each_window_once_and_expands_to_the_same_batch(
    small_mask_path,
):
    rng = np.random.default_rng(21)
    plain = small_collate(small_mask_path, seed=2)
    compact = small_collate(small_mask_path, seed=2, compact=True)
    samples = window_samples(plain, rng, windows=3, k=4)  # 12 samples of 3 windows
    order = [0, 5, 9, 1, 6, 10, 2, 7, 11, 3, 4, 8]
    batch = [samples[i] for i in order]
    small, full = compact(batch), plain(batch)
    assert small["precip"].shape[0] == 3
    assert small["window_index"].tolist() == [0, 1, 2] * 4
    assert_same_batch(expand_windows(small), full)
    grids = [k for m in IMAGE_MODALITIES for k in (m, f"{m}_valid")]
    assert 4 * sum(small[k].nbytes for k in grids) == sum(full[k].nbytes for k in grids)


def test_half_precision_images_halve_the_grids_bytes_and_expand_to_float32(small_mask_path):
    """image_dtype='float16' (compact only): the grids travel in 2 bytes a value, rounded
    to float16; expanded, they are float32 again and differ from the float32 batch by that
    rounding alone. Validity, masks and series are untouched."""
    rng = np.random.default_rng(22)
    full = small_collate(small_mask_path, seed=2, compact=True)
    half = small_collate(small_mask_path, seed=2, compact=True, image_dtype="float16")
    samples = window_samples(full, rng, windows=2, k=3)
    a, b = full(samples), half(samples)
    for m in IMAGE_MODALITIES:
        assert a[m].dtype == torch.float32 and b[m].dtype == torch.float16
        assert 2 * b[m].nbytes == a[m].nbytes
        assert torch.equal(b[m], a[m].half()) and torch.equal(b[f"{m}_valid"], a[f"{m}_valid"])
    x, y = expand_windows(a), expand_windows(b)
    for key, value in x.items():
        if isinstance(value, torch.Tensor):
            assert y[key].dtype == value.dtype, key
            if key in IMAGE_MODALITIES:
                assert torch.equal(y[key], value.half().float()), key
                assert not torch.equal(y[key], value), key  # the rounding is real
            else:
                assert torch.equal(y[key], value), key
    with pytest.raises(ValueError, match="image_dtype 'float16' needs compact=True"):
        small_collate(small_mask_path, image_dtype="float16")

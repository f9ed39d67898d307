"""Baselines and scores: interpolation, neighbour means, climatology, lag regressions, RMSE/MAE,
NSE/KGE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.baselines import (
    Climatology,
    interpolate_time,
    known_in_time,
    neighbour_mean,
    patch_neighbours,
)
from training.metrics import ErrorSums, FlowRecords, kge, nse
from training.regression import LAGS, RAIN_EVAP, WITH_SOIL, LagRegression


def test_time_interpolation_inside_and_at_the_edges():
    values = torch.tensor([[0.0, 9.0, 9.0, 3.0, 9.0, 5.0, 9.0]])
    known = torch.tensor([[False, False, True, True, False, True, False]])
    # day 2 is known but its value (9) is used; days 0-1 carry day 2, day 6 carries day 5
    out = interpolate_time(values, known)
    torch.testing.assert_close(out, torch.tensor([[9.0, 9.0, 9.0, 3.0, 4.0, 5.0, 5.0]]))
    none = interpolate_time(values, torch.zeros_like(known))
    assert torch.equal(none, torch.zeros_like(values))  # no visible day: the training mean
    grid = torch.arange(24.0).reshape(1, 4, 3, 2)  # [B, T, N, P]: a linear ramp in time
    known = torch.zeros(1, 4, 3, 2, dtype=torch.bool)
    known[:, [0, 3]] = True
    torch.testing.assert_close(interpolate_time(grid, known), grid)


def test_neighbour_mean_uses_visible_neighbours_on_the_same_day():
    valid_idx = torch.tensor([0, 1, 2, 5])  # on a 3-column grid: 0 1 2 / . . 5
    adj = patch_neighbours(valid_idx, cols=3)
    assert adj.tolist() == [
        [0, 1, 0, 0],
        [1, 0, 1, 1],
        [0, 1, 0, 1],
        [0, 1, 1, 0],
    ]
    values = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 4, 1).repeat(1, 2, 1, 2)  # [1, 2, 4, 2]
    valid = torch.ones_like(values, dtype=torch.bool)
    masked = torch.tensor([[[False, True, False, False], [True, True, True, True]]])
    out = neighbour_mean(values, valid, masked, adj)
    assert out[0, 0, 1].tolist() == pytest.approx([(1 + 3 + 4) / 3] * 2)  # neighbours 0, 2, 5
    assert out[0, 0, 0].tolist() == [1.0, 1.0]  # visible values stay
    # day 1: no patch visible -> each carried from its last visible day; patch 1 never was
    assert out[0, 1, :, 0].tolist() == [1.0, 0.0, 3.0, 4.0]


def test_climatology_recovers_a_seasonal_cycle():
    doy = np.arange(1, 3 * 365 + 1) % 365 + 1
    truth = 10 + 6 * np.sin(2 * np.pi * doy / 365.25) + 2 * np.cos(4 * np.pi * doy / 365.25)
    values = np.stack([truth, 2 * truth], axis=1) + np.random.default_rng(0).normal(
        0, 1, (len(doy), 2)
    )
    values[::7, 0] = np.nan
    clim = Climatology(2)
    for part in np.array_split(np.arange(len(doy)), 5):  # block by block
        clim.fit(values[part], doy[part])
    pred = clim.predict(np.array([80, 172, 355]))
    expected = truth[[79, 171, 354]]
    np.testing.assert_allclose(pred[:, 0], expected, atol=0.3)
    np.testing.assert_allclose(pred[:, 1], 2 * expected, atol=0.5)


def test_error_sums_and_catchment_scores():
    sums = ErrorSums()
    pred, truth = torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.tensor([[1.0, 0.0], [3.0, 1.0]])
    scored = torch.tensor([[True, True], [False, True]])
    sums.add(pred, truth, scored)
    r = sums.result()
    assert r["count"] == 3 and r["mae"] == pytest.approx(2.0)
    assert r["rmse"] == pytest.approx(np.sqrt((0 + 4 + 16) / 3))
    obs = np.array([1.0, 3.0, 2.0, 5.0])
    assert nse(obs, obs) == 1.0 and kge(obs, obs) == pytest.approx(1.0)
    assert nse(np.full(4, obs.mean()), obs) == pytest.approx(0.0)
    series = FlowRecords()
    days = torch.arange(12.0).view(1, 12)
    series.add(torch.tensor([4]), days + 0.5, days, torch.ones(1, 12, dtype=torch.bool))
    s = series.summary(minimum=10)
    assert s["nse_catchments"] == 1 and 0.9 < s["nse_median"] < 1.0


@pytest.mark.parametrize("m", ["precip", "riverflow"])
def test_scores_of_the_gathered_positions_equal_the_masked_sums_over_whole_tensors(m):
    """``score`` gathers the scored positions once and sums their errors only: the same
    counts and sums (to float rounding) as masking the whole tensors, in both units."""
    from pipeline.normalize import Normalizer, VariableStats
    from training.scoring import Positions, score

    norm = Normalizer({m: VariableStats("log1p", 0.5, 0.8)})
    g = torch.Generator().manual_seed(0)
    shape = (3, 20, 7, 4) if m == "precip" else (3, 20)
    truth, pred = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    scored = torch.rand(shape, generator=g) < 0.6
    physical = torch.where(scored, norm.denormalize(m, truth), float("nan"))  # NaN unscored
    catchment = torch.tensor([0, 2, 2])
    got = score(m, pred, Positions.of(scored, truth, physical), catchment, norm, full=False)
    expected = ErrorSums(), ErrorSums()
    expected[0].add(pred, truth, scored)
    expected[1].add(norm.denormalize(m, pred), physical, scored)
    for sums, want in zip((got.normalised, got.physical), expected, strict=True):
        assert sums.count == want.count == int(scored.sum())
        assert sums.squared == pytest.approx(want.squared, rel=1e-9)
        assert sums.absolute == pytest.approx(want.absolute, rel=1e-9)
    assert (got.prediction is None) == (m != "riverflow")  # riverflow's kept for its records
    if m == "riverflow":
        assert sorted(got.flows.obs) == [0, 2]
        assert sum(map(len, got.flows.obs.values())) == int(scored.sum())


def test_climatology_of_a_record_with_a_seasonal_gap_is_its_mean():
    """A gauge with no flow from April to October in its training record: harmonics fitted
    on the winter alone would extrapolate wildly into the summer; its mean is used."""
    doy = np.tile(np.arange(1, 366), 2)
    values = np.stack([2.0 + np.sin(2 * np.pi * doy / 365.25), 1.0 + 0.5 * np.cos(doy)], 1)
    gap = (doy >= 91) & (doy <= 304)  # April to October
    values[gap, 1] = np.nan
    clim = Climatology(2).fit(values, doy)
    assert clim.supported().tolist() == [True, False]
    summer = clim.predict(np.arange(91, 305))  # [days, 2]
    np.testing.assert_allclose(summer[:, 1], np.nanmean(values[:, 1]), rtol=1e-9)
    assert np.abs(summer[:, 0] - values[90:304, 0]).max() < 0.05  # the full record: harmonics
    short = Climatology(1).fit(np.arange(100.0)[:, None], np.arange(1, 101))  # < a year
    np.testing.assert_allclose(short.predict(np.array([200, 300])), 49.5, rtol=1e-9)


def _lag_columns(x: np.ndarray, fill: float, lags: int) -> np.ndarray:
    """``x [T]`` -> ``[T, lags + 1]`` written out day by day (the test's own design)."""
    return np.array(
        [[x[t - k] if t - k >= 0 else fill for k in range(lags + 1)] for t in range(len(x))]
    )


@pytest.mark.parametrize("names", [RAIN_EVAP, WITH_SOIL])
def test_lag_regressions_match_a_direct_least_squares_fit(names):
    """Rain and evaporation (the classic pair), and with soil moisture: the coefficients are
    a constant, each input's lags in ``names``' order, then (pooled) the static attributes."""
    rng = np.random.default_rng(3)
    w, t, c = 12, 60, 3
    rain = rng.gamma(0.7, 4.0, size=(w, t, c))
    pet = rng.uniform(0.5, 3.0, size=(w, t, c))
    soil = np.random.default_rng(4).uniform(0.05, 0.5, size=(w, t, c))  # m3 m-3
    series = {"precip": rain, "evap": pet, "soil": soil}
    inputs = [series[n] for n in names]
    # flow: a known linear filter of the window's series (earlier days at the means)
    filters = {
        "precip": 0.3 * np.exp(-np.arange(LAGS + 1) / 4.0),
        "evap": np.array([-0.1] + [0] * LAGS),
        "soil": 4.0 * np.exp(-np.arange(LAGS + 1) / 2.0),
    }
    truth = np.concatenate([[0.5], *(filters[n] for n in names)])
    means = [x.mean(axis=(0, 1)) for x in inputs]  # [C] each

    def design(i: int, j: int) -> np.ndarray:  # [T, 1 + n (LAGS + 1)], written out by hand
        lags = [_lag_columns(x[i, :, j], m[j], LAGS) for x, m in zip(inputs, means, strict=True)]
        return np.hstack([np.ones((t, 1)), *lags])

    flow = np.stack([[design(i, j) @ truth for j in range(c)] for i in range(w)]).transpose(0, 2, 1)
    flow += 0.05 * rng.standard_normal((w, t, c))
    static = rng.uniform(1.0, 50.0, size=(c, 2))
    flow[1, 5, 0] = np.nan  # a missing day is left out of the fit
    catchments = np.array([0, 2])  # catchment 1 is held out

    fitted = LagRegression(pooled=False, names=names).fit(inputs, flow, static, catchments)
    assert fitted.coef.shape == (c, 1 + len(names) * (LAGS + 1))
    rows = {}
    for j in catchments:
        x = np.concatenate([design(i, j) for i in range(w)])
        y = flow[:, :, j].reshape(-1)
        ok = np.isfinite(y)
        rows[j] = (x, y)
        direct = np.linalg.lstsq(x[ok], y[ok], rcond=None)[0]
        np.testing.assert_allclose(x[ok] @ fitted.coef[j], x[ok] @ direct, rtol=1e-3)  # RIDGE
        np.testing.assert_allclose(fitted.coef[j], direct, rtol=1e-3, atol=1e-4)
    assert not fitted.coef[1].any()  # the held-out catchment is never fitted

    pooled = LagRegression(pooled=True, names=names).fit(inputs, flow, static, catchments)
    logs = np.log1p(static)
    x = np.concatenate(
        [np.hstack([rows[j][0], np.repeat(logs[j][None], len(rows[j][0]), 0)]) for j in catchments]
    )
    y = np.concatenate([rows[j][1] for j in catchments])
    ok = np.isfinite(y)
    direct = np.linalg.lstsq(x[ok], y[ok], rcond=None)[0]
    np.testing.assert_allclose(x[ok] @ pooled.coef, x[ok] @ direct, rtol=1e-3)
    # the lags' coefficients (the constant and two attributes of two catchments are not
    # identifiable apart: their fitted values are, above)
    lags = slice(1, 1 + len(names) * (LAGS + 1))
    np.testing.assert_allclose(pooled.coef[lags], direct[lags], rtol=1e-3, atol=1e-4)

    # predict: the fitted linear function of the window's series, floored at 0
    got = fitted.predict([torch.from_numpy(x[:, :, 2]) for x in inputs], torch.full((w,), 2), None)
    want = (rows[2][0] @ fitted.coef[2]).reshape(w, t).clip(0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fitted.coef[2, 1 : LAGS + 2], truth[1 : LAGS + 2], atol=0.03)  # rain
    if "soil" in names:  # the last LAGS + 1 coefficients are soil's
        np.testing.assert_allclose(
            fitted.coef[2, -(LAGS + 1) :][:3], truth[-(LAGS + 1) :][:3], atol=0.1
        )

    # a catchment whose rain is never seen (it covers no valid patch) takes the others'
    # mean before the window: its predictions are numbers, never NaN
    unseen = [x.copy() for x in inputs]
    unseen[0][:, :, 1] = np.nan
    both = LagRegression(pooled=True, names=names).fit(unseen, flow, static, catchments)
    np.testing.assert_allclose(both.means[1, 0], np.mean(rain[:, :, [0, 2]]))
    np.testing.assert_allclose(both.means[[0, 2]], fitted.means[[0, 2]])
    window = [torch.zeros(w, t), *(torch.from_numpy(x[:, :, 1]) for x in inputs[1:])]
    pred = both.predict(window, torch.full((w,), 1), torch.from_numpy(static[[1] * w]))
    assert torch.isfinite(pred).all()
    with pytest.raises(ValueError, match="inputs"):  # one series a name, no fewer
        fitted.predict([torch.from_numpy(rain[:, :, 2])], torch.full((w,), 2), None)


def test_interpolation_searched_per_patch_equals_per_pixel_where_land_is_land():
    g = torch.Generator().manual_seed(0)
    b, t, n, p = 3, 20, 5, 4
    valid = (torch.rand(b, 1, n, p, generator=g) > 0.3).expand(b, t, n, p).clone()
    values = torch.where(valid, torch.randn(b, t, n, p, generator=g), 0.0)
    hidden = torch.rand(b, t, n, 1, generator=g) > 0.6
    slow = interpolate_time(values, valid & ~hidden)
    assert known_in_time(valid, hidden).shape == (b, t, n, 1)  # the fast path
    assert torch.equal(interpolate_time(values, known_in_time(valid, hidden)), slow)
    valid[0, 4, 1, 2] = False  # one pixel missing on one day: searched per pixel again
    values[0, 4, 1, 2] = 0.0
    known = known_in_time(valid, hidden)
    assert known.shape == (b, t, n, p) and torch.equal(known, valid & ~hidden)


def test_lag_regressions_read_the_days_before_the_window_when_given():
    # one continuous record cut into windows: flow is a filter of the whole record, so only
    # a regression that reads the days before each window can reproduce its first days
    rng = np.random.default_rng(5)
    w, t = 10, 40
    total = LAGS + w * t
    rain = rng.gamma(0.7, 4.0, size=total)
    pet = rng.uniform(0.5, 3.0, size=total)
    truth = np.concatenate([[0.2], 0.3 * np.exp(-np.arange(LAGS + 1) / 8.0), [-0.1], [0] * LAGS])
    full = np.hstack(
        [np.ones((total, 1)), _lag_columns(rain, 0.0, LAGS), _lag_columns(pet, 0.0, LAGS)]
    )
    flow = full @ truth  # valid from day LAGS on

    def cut(x: np.ndarray) -> np.ndarray:  # [W, T, 1]: the windows after the first LAGS days
        return x[LAGS:].reshape(w, t, 1)

    def lead(x: np.ndarray) -> np.ndarray:  # [W, LAGS, 1]: the LAGS days before each window
        return np.stack([x[i * t : i * t + LAGS] for i in range(w)])[..., None]

    static, one = np.zeros((1, 0)), np.array([0])
    with_history = LagRegression(pooled=False).fit(
        (cut(rain), cut(pet)), cut(flow), static, one, before=(lead(rain), lead(pet))
    )
    np.testing.assert_allclose(with_history.coef[0], truth, atol=1e-4)
    got = with_history.predict(
        (torch.from_numpy(cut(rain)[..., 0]), torch.from_numpy(cut(pet)[..., 0])),
        torch.zeros(w, dtype=torch.long), None,
        before=(torch.from_numpy(lead(rain)[..., 0]), torch.from_numpy(lead(pet)[..., 0])),
    )  # fmt: skip
    np.testing.assert_allclose(got.numpy(), cut(flow)[..., 0], rtol=1e-3, atol=1e-3)
    # without the days before, the first days of each window take the means: worse
    cold = LagRegression(pooled=False).fit((cut(rain), cut(pet)), cut(flow), static, one)
    guess = cold.predict(
        (torch.from_numpy(cut(rain)[..., 0]), torch.from_numpy(cut(pet)[..., 0])),
        torch.zeros(w, dtype=torch.long), None,
    )  # fmt: skip
    error = np.abs(guess.numpy() - cut(flow)[..., 0])[:, :LAGS].mean()
    assert error > 10 * np.abs(got.numpy() - cut(flow)[..., 0])[:, :LAGS].mean()


def _flow_case() -> tuple[dict, dict, dict, torch.Tensor, torch.Tensor]:
    """A batch of two samples (2 catchments, 15 days, 4 valid patches of a 3-column grid of
    6, 3 pixels each) under random masks, and the four regressions of evaluation fitted
    on random windows where flow follows rain, evaporation and soil moisture:
    ``(batch, seen, regressions, valid_idx, adjacency)``."""
    from training.fit_baselines import REGRESSIONS

    rng = np.random.default_rng(7)
    g = torch.Generator().manual_seed(7)
    w, t, c, b, n, p = 8, 40, 2, 2, 4, 3
    series = {
        "precip": rng.gamma(0.7, 4.0, size=(w, t, c)),
        "evap": rng.uniform(0.5, 3.0, size=(w, t, c)),
        "soil": rng.uniform(0.1, 0.45, size=(w, t, c)),
    }
    flow = 0.3 * series["precip"] - 0.1 * series["evap"] + 5.0 * series["soil"]
    flow += 0.05 * rng.standard_normal((w, t, c))
    static = rng.uniform(1.0, 50.0, size=(c, 2))
    regressions = {
        name: LagRegression(pooled, names).fit(
            [series[k] for k in names], flow, static, np.arange(c)
        )
        for name, (pooled, names) in REGRESSIONS.items()
    }
    t = 15
    ones = torch.ones(b, t, n, p, dtype=torch.bool)
    batch = {
        "precip": 10 * torch.rand(b, t, n, p, generator=g),
        "soil": 0.1 + 0.35 * torch.rand(b, t, n, p, generator=g),
        "evap": 3 * torch.rand(b, t, generator=g),
        "riverflow": 2 * torch.rand(b, t, generator=g),
        **{f"{m}_valid": ones for m in ("precip", "soil")},
        **{f"{m}_valid": torch.ones(b, t, dtype=torch.bool) for m in ("evap", "riverflow")},
        "catchment_weight": torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]]),
        "catchment_pixels": torch.rand(b, n, p, generator=g),
        "catchment_index": torch.tensor([0, 1]),
        "static": torch.from_numpy(static).float(),
        "static_valid": torch.ones(b, 2, dtype=torch.bool),
        "doy": torch.arange(1, t + 1, dtype=torch.int16).repeat(b, 1),
    }
    seen = dict(batch)
    for m in ("precip", "soil"):  # about half the valid patches masked each day
        seen[f"{m}_mask"] = torch.rand(b, t, 6, generator=g) < 0.5
    seen["evap_mask"] = torch.rand(b, t, generator=g) < 0.5
    seen["riverflow_mask"] = torch.ones(b, t, dtype=torch.bool)
    valid_idx = torch.tensor([0, 1, 2, 4])
    return batch, seen, regressions, valid_idx, patch_neighbours(valid_idx, cols=3)


@pytest.mark.parametrize("m", ["precip", "soil"])
def test_the_regressions_read_only_the_visible_images_and_only_their_own_inputs(m):
    """Changing an image where the strategy masks it changes no regression's input; where
    it is visible, it moves its catchment mean and exactly the regressions that read it:
    soil moisture the ``_soil`` ones, never the rain and evaporation ones."""
    from pipeline.normalize import Normalizer, VariableStats
    from training.scoring import regression_inputs, regression_predictions

    batch, seen, regressions, valid_idx, adjacency = _flow_case()
    norm = Normalizer({"riverflow": VariableStats("log1p", 0.5, 0.8)})
    hidden = seen[f"{m}_mask"][..., valid_idx][..., None]  # [B, T, N, 1]
    assert hidden.any() and (~hidden).any()

    def predict(values: torch.Tensor) -> tuple[dict, dict]:
        changed = {**batch, m: values}
        visible = regression_inputs(changed, seen, valid_idx, adjacency)
        return visible, regression_predictions(
            changed, visible, regressions, norm, tuple(regressions)
        )

    visible, preds = predict(batch[m])
    assert set(visible) == {"precip", "evap", "soil"}
    masked_visible, masked_preds = predict(torch.where(hidden, 3 * batch[m] + 1, batch[m]))
    assert all(torch.equal(masked_visible[k], visible[k]) for k in visible)
    assert all(torch.equal(masked_preds[k], preds[k]) for k in regressions)
    moved_visible, moved_preds = predict(torch.where(hidden, batch[m], 3 * batch[m] + 1))
    assert not torch.allclose(moved_visible[m], visible[m])
    for name, regression in regressions.items():
        reads = m in regression.names
        assert reads == (name.endswith("_soil") or m == "precip")
        assert torch.equal(moved_preds[name], preds[name]) != reads, name


def test_the_regressions_visible_inputs_are_kept_per_soil_mask_and_holdout_is_pooled():
    """``baseline_predictions`` keeps the regressions' visible inputs for the batch's later
    strategies (``SameMasks``) by the masks they read: another soil mask alone computes
    them again, so the soil regressions follow it and the others do not move."""
    from pipeline.normalize import Normalizer, VariableStats
    from training.evaluate import HOLDOUT, baseline_predictions
    from training.scoring import SameMasks

    batch, seen, regressions, valid_idx, adjacency = _flow_case()
    norm = Normalizer({"riverflow": VariableStats("log1p", 0.5, 0.8)})
    days = np.arange(1, 366)
    clim = {"riverflow": Climatology(2).fit(np.stack([days / 365, 1 - days / 365], 1), days)}
    truth = norm.where_valid("riverflow", batch["riverflow"], batch["riverflow_valid"])
    other = {**seen, "soil_mask": ~seen["soil_mask"]}

    def run(s: dict, same: SameMasks, strategy: str = "simulate") -> dict:
        masked = s["riverflow_mask"]
        return baseline_predictions(
            batch, s, strategy, "riverflow", truth, masked, masked, clim, regressions, norm,
            valid_idx, adjacency, same,
        )  # fmt: skip

    same = SameMasks()
    first, second = run(seen, same), run(other, same)
    fresh = run(other, SameMasks())
    assert all(torch.equal(second[k], fresh[k]) for k in regressions)
    for name in regressions:
        assert torch.equal(second[name], first[name]) == (not name.endswith("_soil")), name
    held = run(seen, SameMasks(), HOLDOUT)
    assert set(held) & set(regressions) == {"pooled", "pooled_soil"}
    assert torch.equal(held["pooled_soil"], first["pooled_soil"])


def test_the_regressions_read_their_own_inputs_on_the_days_before_the_window():
    """With a history, each regression reads its inputs' own features of it (in
    ``HISTORY_FEATURES``' order): changing one feature there moves exactly the regressions
    that read that input (temperature: none)."""
    from pipeline.history import HISTORY_FEATURES
    from pipeline.normalize import Normalizer, VariableStats
    from training.scoring import regression_inputs, regression_predictions

    batch, seen, regressions, valid_idx, adjacency = _flow_case()
    norm = Normalizer({"riverflow": VariableStats("log1p", 0.5, 0.8)})
    g = torch.Generator().manual_seed(8)
    scale = {"precip": 10.0, "soil": 0.4, "temp": 15.0, "evap": 3.0}
    history = torch.stack(
        [scale[f] * torch.rand(2, LAGS, generator=g) for f in HISTORY_FEATURES], dim=-1
    )  # [B, H, F]
    batch = {**batch, "history": history, "history_valid": torch.ones_like(history, dtype=bool)}
    visible = regression_inputs(batch, seen, valid_idx, adjacency)
    base = regression_predictions(batch, visible, regressions, norm, tuple(regressions))
    for f, feature in enumerate(HISTORY_FEATURES):
        changed = history.clone()
        changed[..., f] = 0.5 * changed[..., f] + scale[feature]
        preds = regression_predictions(
            {**batch, "history": changed}, visible, regressions, norm, tuple(regressions)
        )
        for name, regression in regressions.items():
            moved = not torch.equal(preds[name], base[name])
            assert moved == (feature in regression.names), (feature, name)


def test_fit_regressions_fits_rain_and_evaporation_and_with_soil_moisture(held_out_dataset):
    """The four regressions, each the fit of its own inputs' catchment means on the
    training windows: the rain and evaporation ones as if soil moisture were never read."""
    from pipeline.history import catchment_series
    from pipeline.manifest import Manifest
    from pipeline.schema import STORE
    from training.fit_baselines import fit_regressions, holdout_indices

    manifest = Manifest.read(held_out_dataset)
    fits = fit_regressions(held_out_dataset, manifest)
    assert {name: (r.pooled, r.names) for name, r in fits.items()} == {
        "regression": (False, RAIN_EVAP),
        "pooled": (True, RAIN_EVAP),
        "regression_soil": (False, WITH_SOIL),
        "pooled_soil": (True, WITH_SOIL),
    }
    names = ("soil", "riverflow", "evap", "precip")  # read apart, in another order
    series = catchment_series(str(held_out_dataset / STORE), manifest, names)  # [time, C, 4]
    starts = [(s - manifest.period.start).days for s in manifest.window_starts("train")]

    def windows(name: str) -> np.ndarray:  # [W, T, C]
        return np.stack([series[i : i + manifest.window, :, names.index(name)] for i in starts])

    table = manifest.catchment_table()
    held = holdout_indices(manifest)
    gauged = np.setdiff1d(np.arange(len(table.ids)), held)
    assert held.size == 1 and np.isfinite(windows("soil")).any()
    for fitted in fits.values():
        direct = LagRegression(fitted.pooled, fitted.names).fit(
            [windows(n) for n in fitted.names], windows("riverflow"), table.static, gauged
        )
        np.testing.assert_allclose(fitted.means, direct.means, rtol=1e-12)
        np.testing.assert_allclose(fitted.coef, direct.coef, rtol=1e-9, atol=1e-12)
        if not fitted.pooled:
            assert not fitted.coef[held].any()  # no flow record, no fit
    assert 0 < fits["regression_soil"].means[:, 2].min() < 1  # m3 m-3

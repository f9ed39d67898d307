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
from training.regression import LAGS, LagRegression


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


def test_lag_regressions_match_a_direct_least_squares_fit():
    rng = np.random.default_rng(3)
    w, t, c = 12, 60, 3
    rain = rng.gamma(0.7, 4.0, size=(w, t, c))
    pet = rng.uniform(0.5, 3.0, size=(w, t, c))
    # flow: a known linear filter of the window's rain and pet (earlier days at the means)
    truth = np.concatenate([[0.5], 0.3 * np.exp(-np.arange(LAGS + 1) / 4.0), [-0.1], [0] * LAGS])
    means = rain.mean(axis=(0, 1)), pet.mean(axis=(0, 1))  # [C] each

    def inputs(i: int, j: int) -> np.ndarray:  # [T, 1 + 2 (LAGS + 1)], written out by hand
        lags = [
            _lag_columns(x[i, :, j], m[j], LAGS) for x, m in ((rain, means[0]), (pet, means[1]))
        ]
        return np.hstack([np.ones((t, 1)), *lags])

    flow = np.stack([[inputs(i, j) @ truth for j in range(c)] for i in range(w)]).transpose(0, 2, 1)
    flow += 0.05 * rng.standard_normal((w, t, c))
    static = rng.uniform(1.0, 50.0, size=(c, 2))
    flow[1, 5, 0] = np.nan  # a missing day is left out of the fit
    catchments = np.array([0, 2])  # catchment 1 is held out

    fitted = LagRegression(pooled=False).fit(rain, pet, flow, static, catchments)
    rows = {}
    for j in catchments:
        x = np.concatenate([inputs(i, j) for i in range(w)])
        y = flow[:, :, j].reshape(-1)
        ok = np.isfinite(y)
        rows[j] = (x, y)
        direct = np.linalg.lstsq(x[ok], y[ok], rcond=None)[0]
        np.testing.assert_allclose(x[ok] @ fitted.coef[j], x[ok] @ direct, rtol=1e-3)  # RIDGE
    assert not fitted.coef[1].any()  # the held-out catchment is never fitted

    pooled = LagRegression(pooled=True).fit(rain, pet, flow, static, catchments)
    logs = np.log1p(static)
    x = np.concatenate(
        [np.hstack([rows[j][0], np.repeat(logs[j][None], len(rows[j][0]), 0)]) for j in catchments]
    )
    y = np.concatenate([rows[j][1] for j in catchments])
    ok = np.isfinite(y)
    direct = np.linalg.lstsq(x[ok], y[ok], rcond=None)[0]
    np.testing.assert_allclose(x[ok] @ pooled.coef, x[ok] @ direct, rtol=1e-3)

    # predict: the fitted linear function of the window's rain and pet, floored at 0
    got = fitted.predict(
        torch.from_numpy(rain[:, :, 2]), torch.from_numpy(pet[:, :, 2]),
        torch.full((w,), 2), None,
    )  # fmt: skip
    want = (rows[2][0] @ fitted.coef[2]).reshape(w, t).clip(0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fitted.coef[2, 1 : LAGS + 2], truth[1 : LAGS + 2], atol=0.03)  # rain

    # a catchment whose rain is never seen (it covers no valid patch) takes the others'
    # mean before the window: its predictions are numbers, never NaN
    unseen = rain.copy()
    unseen[:, :, 1] = np.nan
    both = LagRegression(pooled=True).fit(unseen, pet, flow, static, catchments)
    np.testing.assert_allclose(both.means[1, 0], np.mean(rain[:, :, [0, 2]]))
    np.testing.assert_allclose(both.means[[0, 2]], fitted.means[[0, 2]])
    pred = both.predict(
        torch.zeros(w, t), torch.from_numpy(pet[:, :, 1]), torch.full((w,), 1),
        torch.from_numpy(static[[1] * w]),
    )  # fmt: skip
    assert torch.isfinite(pred).all()


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
        cut(rain), cut(pet), cut(flow), static, one, before=(lead(rain), lead(pet))
    )
    np.testing.assert_allclose(with_history.coef[0], truth, atol=1e-4)
    got = with_history.predict(
        torch.from_numpy(cut(rain)[..., 0]), torch.from_numpy(cut(pet)[..., 0]),
        torch.zeros(w, dtype=torch.long), None,
        before=(torch.from_numpy(lead(rain)[..., 0]), torch.from_numpy(lead(pet)[..., 0])),
    )  # fmt: skip
    np.testing.assert_allclose(got.numpy(), cut(flow)[..., 0], rtol=1e-3, atol=1e-3)
    # without the days before, the first days of each window take the means: worse
    cold = LagRegression(pooled=False).fit(cut(rain), cut(pet), cut(flow), static, one)
    guess = cold.predict(
        torch.from_numpy(cut(rain)[..., 0]), torch.from_numpy(cut(pet)[..., 0]),
        torch.zeros(w, dtype=torch.long), None,
    )  # fmt: skip
    error = np.abs(guess.numpy() - cut(flow)[..., 0])[:, :LAGS].mean()
    assert error > 10 * np.abs(got.numpy() - cut(flow)[..., 0])[:, :LAGS].mean()

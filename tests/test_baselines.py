"""Baselines and scores: interpolation, neighbour means, climatology, RMSE/MAE, NSE/KGE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.baselines import (
    Climatology,
    interpolate_time,
    neighbour_mean,
    patch_neighbours,
)
from training.metrics import ErrorSums, FlowRecords, kge, nse


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

"""Land-surface hydrology: Oudin potential evaporation, a soil bucket per cell, river routing.

Grids are ``[y, x]`` (or flat ``[cells]``) per day; catchment series are ``[time]`` or
``[time, catchment]``. Water amounts in mm (per day for fluxes), temperatures in degC.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter
from scipy.stats import gamma as gamma_dist

SOLAR_CONSTANT = 0.0820  # MJ m-2 min-1
LATENT_HEAT = 2.45  # MJ kg-1
WATER_DENSITY = 1000.0  # kg m-3


def extraterrestrial_radiation(lat_deg: np.ndarray, doy: int) -> np.ndarray:
    """Daily extraterrestrial radiation Re (MJ m-2 day-1), FAO-56 eq. 21, same shape as lat.

    ``Re = 24 * 60 / pi * Gsc * dr * (ws sin(phi) sin(delta) + cos(phi) cos(delta) sin(ws))``
    with ``dr = 1 + 0.033 cos(2 pi J / 365)``, ``delta = 0.409 sin(2 pi J / 365 - 1.39)``,
    ``ws = arccos(-tan(phi) tan(delta))``.
    """
    phi = np.deg2rad(lat_deg)
    dr = 1.0 + 0.033 * np.cos(2.0 * np.pi * doy / 365.0)
    delta = 0.409 * np.sin(2.0 * np.pi * doy / 365.0 - 1.39)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(delta), -1.0, 1.0))
    return (
        24.0
        * 60.0
        / np.pi
        * SOLAR_CONSTANT
        * dr
        * (ws * np.sin(phi) * np.sin(delta) + np.cos(phi) * np.cos(delta) * np.sin(ws))
    )


def oudin_pet(radiation: np.ndarray, tas: np.ndarray) -> np.ndarray:
    """Oudin et al. (2005) potential evaporation, mm/day.

    ``PE = Re / (lambda rho) * (T + 5) / 100`` (m/day, times 1000 for mm) where T > -5 degC,
    else 0; ``Re`` in MJ m-2 day-1, ``lambda`` = 2.45 MJ/kg, ``rho`` = 1000 kg/m3.
    """
    pe = radiation / (LATENT_HEAT * WATER_DENSITY) * (tas + 5.0) / 100.0 * 1000.0
    return np.where(tas > -5.0, pe, 0.0)


@dataclass
class SoilBucket:
    """One soil store per cell (flat ``[cells]``), water in mm over a ``depth`` mm layer.

    Per day: direct runoff ``Qd = P (c_0 + c_d w^3)`` (near-channel and saturated
    contributing areas), infiltration
    ``P - Qd``; overflow ``Qo`` above saturation ``S_max``; evaporation ``E = PET *
    min(1, (S - S_r) / (S_fc - S_r))``; drainage ``Dr = K_d w^4`` with wetness
    ``w = (S - S_r) / (S_max - S_r)``. ``S`` stays within ``[S_r, S_max]`` and is reported
    as volumetric content ``theta = S / depth`` (m3 m-3). Fast runoff = ``Qd + Qo``, slow
    runoff = ``Dr``.
    """

    size: int
    depth: float = 500.0  # mm
    theta_r: float = 0.10
    theta_fc: float = 0.28
    theta_s: float = 0.45
    direct_coeff: float = 0.5
    channel_fraction: float = 0.03
    drainage_max: float = 5.0  # mm/day at saturation
    storage: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.storage = np.full(self.size, self.depth * 0.5 * (self.theta_fc + self.theta_s))

    @property
    def s_r(self) -> float:
        return self.theta_r * self.depth

    @property
    def s_fc(self) -> float:
        return self.theta_fc * self.depth

    @property
    def s_max(self) -> float:
        return self.theta_s * self.depth

    def wetness(self) -> np.ndarray:
        return (self.storage - self.s_r) / (self.s_max - self.s_r)

    def step(self, rain: np.ndarray, pet: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One day: returns ``(fast, slow, evaporation)`` runoff and AET in mm, ``[cells]``."""
        w = self.wetness()
        direct = rain * (self.channel_fraction + self.direct_coeff * w**3)
        s = self.storage + rain - direct
        overflow = np.maximum(s - self.s_max, 0.0)
        s = s - overflow
        beta = np.clip((s - self.s_r) / (self.s_fc - self.s_r), 0.0, 1.0)
        evap = np.minimum(pet * beta, s - self.s_r)
        s = s - evap
        w = (s - self.s_r) / (self.s_max - self.s_r)
        drain = np.minimum(self.drainage_max * w**4, s - self.s_r)
        self.storage = s - drain
        return direct + overflow, drain, evap

    def theta(self) -> np.ndarray:
        """Volumetric soil moisture ``[cells]``, m3 m-3, within ``[theta_r, theta_s]``."""
        return self.storage / self.depth


def fast_unit_hydrograph(delay_days: float, k_days: float, length: int = 30) -> np.ndarray:
    """Daily ordinates of a delayed two-reservoir Nash cascade, ``[length]``, summing to 1.

    ``h_j = G(j + 1 - tau) - G(j - tau)`` with ``G`` the gamma(2, k) distribution function
    and ``tau`` the delay, so rain on day ``t`` reaches the outlet mostly on ``t + 1``.
    """
    edges = np.arange(length + 1, dtype=np.float64) - delay_days
    cdf = gamma_dist.cdf(np.maximum(edges, 0.0), a=2.0, scale=k_days)
    h = np.diff(cdf)
    return h / h.sum()


def route(fast_in: np.ndarray, slow_in: np.ndarray, delay: float, k_fast: float, k_slow: float):
    """Specific discharge ``[time]`` (mm/day) of a catchment from its runoff ``[time]`` (mm/day).

    Fast runoff goes through :func:`fast_unit_hydrograph`; slow runoff through a linear
    reservoir ``Q_t = a Q_{t-1} + (1 - a) I_{t-1}``, ``a = exp(-1 / k_slow)``, started at the
    mean input of the first year (steady state). Returns ``(total, slow)``.
    """
    uh = fast_unit_hydrograph(delay, k_fast)
    fast = np.convolve(fast_in, uh)[: fast_in.size]
    a = float(np.exp(-1.0 / k_slow))
    start = float(np.mean(slow_in[:365]))
    lagged = np.concatenate([[start], slow_in[:-1]])
    slow, _ = lfilter([1.0 - a], [1.0, -a], lagged, zi=[a * start])
    return fast + slow, slow


def flow_gaps(days: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``[days]``, True = missing flow, for one gauge.

    Kinds (drawn per gauge): 45% complete but a few isolated days (rate 0.2%); 30% scattered
    gaps (runs of 1-14 days starting at rate 0.4-1.5% a day); 25% a long block (a calendar
    year-length run, at most a third of the period) plus isolated days. At most half the
    days are ever missing.
    """
    missing = rng.random(days) < 0.002
    kind = rng.random()
    if 0.45 <= kind < 0.75:
        starts = np.flatnonzero(rng.random(days) < rng.uniform(0.004, 0.015))
        for s in starts:
            missing[s : s + int(rng.integers(1, 15))] = True
    elif kind >= 0.75:
        length = max(1, min(365, days // 3))
        s = int(rng.integers(0, max(1, days - length + 1)))
        missing[s : s + length] = True
    if missing.sum() > days // 2:
        missing[: days - days // 2] = False
    return missing

"""Daily weather fields: advected intermittent rain and AR(1) temperature, ``[y, x]`` per day.

Random fields live in spectral space on a padded periodic domain (``PAD`` cells a side,
larger than the 290 x 180 grid so that weather leaving the east does not wrap straight
back in the west) and are cut to the grid window. All state is held in the generator
objects; randomness comes only from the ``numpy.random.Generator`` each is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from preprocessing.synth.geography import Geography

PAD = (384, 384)  # padded periodic domain, cells (y, x)
CELL_KM = 5.0
TWO_PI = 2.0 * np.pi


def season(doy: np.ndarray | float, peak_doy: float) -> np.ndarray | float:
    """``cos(2 pi (doy - peak) / 365.25)``: +1 on ``peak_doy``, -1 half a year later."""
    return np.cos(TWO_PI * (np.asarray(doy, dtype=np.float64) - peak_doy) / 365.25)


class SpectralField:
    """A stationary, unit-variance gaussian random field advected and renewed each day.

    ``Z_hat(k, t) = rho(k) * exp(-2 pi i k . d_t) * Z_hat(k, t-1)
    + sqrt(1 - rho(k)^2) * F(k) * W_hat(k, t)`` with ``W`` white noise, ``d_t`` the day's
    displacement in cells, ``F(k)^2`` the spectrum (a sum of gaussians of the given length
    scales, normalised to unit variance) and ``rho(k) = rho0 / (1 + (|k| L_rho)^2)`` the
    day-to-day memory, shorter for small features. ``sample()`` returns ``Z`` on the grid
    window, ``[H, W]``.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        shape: tuple[int, int],
        scales_km: tuple[tuple[float, float], ...],
        rho0: float,
        rho_scale_km: float,
    ) -> None:
        self.rng = rng
        self.shape = shape
        ky = np.fft.fftfreq(PAD[0])[:, None]  # cycles per cell
        kx = np.fft.rfftfreq(PAD[1])[None, :]
        self.ky, self.kx = ky, kx
        k2 = ky**2 + kx**2
        spec = np.zeros_like(k2)
        for weight, length_km in scales_km:
            length = length_km / CELL_KM
            spec = spec + weight * np.exp(-2.0 * np.pi**2 * k2 * length**2)
        spec[0, 0] = 0.0
        # unit variance for irfft2(F * rfft2(white)): var = sum over the full spectrum of F^2 / N
        full = np.concatenate([spec, spec[:, 1 : (PAD[1] + 1) // 2][:, ::-1]], axis=1)
        spec = spec / (full.sum() / (PAD[0] * PAD[1]))
        self.amp = np.sqrt(spec)
        self.rho = rho0 / (1.0 + k2 * (rho_scale_km / CELL_KM) ** 2)
        self.renew_amp = np.sqrt(1.0 - self.rho**2) * self.amp
        self.state = self.amp * np.fft.rfft2(rng.standard_normal(PAD))

    def step(self, shift_cells: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """Advance one day, moving the field by ``(dy, dx)`` cells; return ``[H, W]``."""
        dy, dx = shift_cells
        noise = np.fft.rfft2(self.rng.standard_normal(PAD))
        memory = self.rho * self.state
        if dy or dx:  # separable phase ramp: exp(-2 pi i ky dy) exp(-2 pi i kx dx)
            memory *= np.exp(-2j * np.pi * self.ky * dy) * np.exp(-2j * np.pi * self.kx * dx)
        self.state = memory + self.renew_amp * noise
        h, w = self.shape
        return np.fft.irfft2(self.state, s=PAD)[:h, :w]


@dataclass
class Wind:
    """Daily steering wind (km/day): prevailing westerly plus AR(1) anomalies."""

    rng: np.random.Generator
    mean_east: float = 350.0
    sd: float = 260.0
    memory: float = 0.6
    east: float = 0.0
    north: float = 0.0

    def step(self) -> tuple[float, float]:
        """Next day's ``(eastward, northward)`` wind in km/day."""
        e = np.sqrt(1.0 - self.memory**2) * self.sd
        self.east = self.memory * self.east + e * float(self.rng.standard_normal())
        self.north = self.memory * self.north + e * float(self.rng.standard_normal())
        return self.mean_east + self.east, self.north


def _ramp_mean(gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Table of ``E[max(L + mu, 0)^gamma]`` for ``L ~ N(0, 1)`` over ``mu`` in [-4, 4]."""
    z = np.linspace(-9.0, 9.0, 7201)
    pdf = np.exp(-0.5 * z**2) / np.sqrt(2.0 * np.pi)
    mus = np.linspace(-4.0, 4.0, 801)
    vals = np.array([np.trapezoid(np.maximum(z + m, 0.0) ** gamma * pdf, z) for m in mus])
    return mus, vals


class RainModel:
    """Intermittent daily rain ``[H, W]`` in mm, advected with the wind.

    Climatology: annual total ``P_ann = 520 + 800 w + 1.9 E_s`` mm (``w`` = westness in
    [0, 1], 1 at easting <= 130 km, 0 at >= 430 km; ``E_s`` smoothed elevation in m), daily
    mean ``m = P_ann / 365.25 * (1 + 0.25 cos(2 pi (doy - 350) / 365.25))``. Wet-day
    probability ``p = clip(0.38 + 0.18 w + 0.12 E_s/1000 + 0.06 season, 0.2, 0.8)``.
    Latent ``L = 0.8 Z + 0.6 S`` (``Z`` the advected field, ``S`` a domain-wide AR(1)
    synoptic wetness); with ``mu = Phi^-1(p)`` rain is
    ``R = m * max(L + mu, 0)^2 / E[max(L + mu, 0)^2]`` so ``P(R > 0) = p`` and ``E[R] = m``.
    """

    gamma = 2.0

    def __init__(self, geo: Geography, rng: np.random.Generator) -> None:
        self.geo = geo
        self.rng = rng
        self.field = SpectralField(
            rng, geo.shape, scales_km=((0.8, 110.0), (0.2, 25.0)), rho0=0.8, rho_scale_km=60.0
        )
        self.wind = Wind(rng)
        self.synoptic = 0.0
        east = geo.easting
        self.westness = np.clip((430_000.0 - east) / 300_000.0, 0.0, 1.0)
        es = geo.elevation_smooth
        self.annual = 520.0 + 800.0 * self.westness + 1.9 * es  # mm / year
        self.wet_base = 0.38 + 0.18 * self.westness + 0.12 * es / 1000.0
        self._mus, self._means = _ramp_mean(self.gamma)

    def climatology(self, doy: int) -> tuple[np.ndarray, np.ndarray]:
        """Daily mean rain (mm) and wet-day probability, both ``[H, W]``, for a day of year."""
        s = float(season(doy, 350.0))
        mean = self.annual / 365.25 * (1.0 + 0.25 * s)
        p_wet = np.clip(self.wet_base + 0.06 * s, 0.2, 0.8)
        return mean, p_wet

    def step(self, doy: int) -> tuple[np.ndarray, tuple[float, float]]:
        """Rain ``[H, W]`` (mm, >= 0, land and sea) and the day's wind (km/day)."""
        east, north = self.wind.step()
        z = self.field.step((north / CELL_KM, east / CELL_KM))
        self.synoptic = 0.7 * self.synoptic + np.sqrt(1 - 0.49) * float(self.rng.standard_normal())
        latent = 0.8 * z + 0.6 * self.synoptic
        mean, p_wet = self.climatology(doy)
        mu = ndtri(p_wet)
        norm = np.interp(mu, self._mus, self._means)
        rain = mean * np.maximum(latent + mu, 0.0) ** self.gamma / norm
        return rain, (east, north)


class TemperatureModel:
    """Daily mean, maximum and minimum air temperature ``[H, W]`` in degC.

    ``tas = T0(y) - A(x) cos(2 pi (doy - 20) / 365.25) - 6.5 E / 1000 + a_t - 0.5 ln(1 + R)``
    with ``T0 = 10.8 - 0.45 (northing - 300 km) / 100 km`` (sea-level annual mean),
    ``A = 5.6 + 0.8 (1 - w)`` (the seasonal half-range, larger inland/east), ``E``
    elevation (m, lapse rate 6.5 degC/km), ``a_t`` an AR(1) smooth anomaly (lag-1
    correlation 0.75, sd 2.6 degC in winter to 1.8 in summer, 250 km scale) and ``R``
    the day's rain (mm). Diurnal range
    ``DTR = (7.5 + 2.5 season_summer) * (1 - 0.55 (1 - exp(-R / 3)))``;
    ``tasmax = tas + DTR/2``, ``tasmin = tas - DTR/2``.
    """

    def __init__(self, geo: Geography, rng: np.random.Generator) -> None:
        self.field = SpectralField(
            rng, geo.shape, scales_km=((1.0, 250.0),), rho0=0.75, rho_scale_km=0.0
        )
        westness = np.clip((430_000.0 - geo.easting) / 300_000.0, 0.0, 1.0)
        self.mean = 10.8 - 0.45 * (geo.northing - 300_000.0) / 100_000.0
        self.mean = self.mean - 6.5 * geo.elevation / 1000.0
        self.amplitude = 5.6 + 0.8 * (1.0 - westness)

    def step(self, doy: int, rain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(tas, half_range)`` ``[H, W]`` degC for a day of year and the day's rain (mm)."""
        summer = float(season(doy, 190.0))
        anomaly = self.field.step() * (2.2 - 0.4 * summer)
        tas = self.mean - self.amplitude * season(doy, 20.0) + anomaly - 0.5 * np.log1p(rain)
        dtr = (7.5 + 2.5 * summer) * (1.0 - 0.55 * (1.0 - np.exp(-rain / 3.0)))
        return tas, 0.5 * dtr

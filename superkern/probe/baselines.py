"""Reference values for overlaps of unit vectors in R^m (SPEC section 1).

- iid isotropic random unit vectors: c = u . v has density
  f_m(c) = Gamma(m/2) / (sqrt(pi) Gamma((m-1)/2)) (1 - c^2)^((m-3)/2) on [-1, 1], with
  E c^2 = 1/m and E|c| = Gamma(m/2) / (sqrt(pi) Gamma((m+1)/2)).
- Welch bound: nu >= m unit vectors have max |c| >= kappa = sqrt((nu - m) / (m (nu - 1))),
  reached by equiangular tight frames, which exist in R^m only for nu <= m(m+1)/2.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln


def random_mean_sq(m: int) -> float:
    """E c^2 = 1/m for two independent uniform unit vectors in R^m."""
    return 1.0 / m


def random_mean_abs(m: int) -> float:
    """E|c| = Gamma(m/2) / (sqrt(pi) Gamma((m+1)/2)) (log-gamma: stable for any m)."""
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    return math.exp(gammaln(m / 2) - gammaln((m + 1) / 2)) / math.sqrt(math.pi)


def random_var_abs(m: int) -> float:
    """Var |c| = 1/m - (E|c|)^2 for random unit vectors."""
    return random_mean_sq(m) - random_mean_abs(m) ** 2


def random_density(c: np.ndarray, m: int) -> np.ndarray:
    """Density f_m(c) of the cosine between two random unit vectors in R^m (m >= 2)."""
    if m < 2:
        raise ValueError(f"the overlap density needs m >= 2, got {m}")
    c = np.asarray(c, dtype=np.float64)
    log_norm = gammaln(m / 2) - gammaln((m - 1) / 2) - 0.5 * math.log(math.pi)
    inside = np.clip(1.0 - c * c, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) at c = +-1, masked below
        out = np.exp(log_norm + 0.5 * (m - 3) * np.log(inside))
    return np.where(np.abs(c) < 1.0, out, 0.0)


def welch_bound(nu: int, m: int) -> float:
    """kappa = sqrt((nu - m) / (m (nu - 1))); 0 when nu <= m (an orthogonal set fits)."""
    if nu <= m or nu < 2:
        return 0.0
    return math.sqrt((nu - m) / (m * (nu - 1)))


def etf_possible(nu: int, m: int) -> bool:
    """Whether an equiangular tight frame of nu vectors can exist in R^m (nu <= m(m+1)/2)."""
    return nu <= m * (m + 1) // 2

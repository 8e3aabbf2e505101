"""Model size against width for LLM families (the paper's Fig. 23), and the width exponent it
implies from a parameter-count scaling law.

The paper fits N ∝ m^k with one exponent k shared by all families and a coefficient per
family (k = 2.51 over OPT, Qwen2.5, GPT-2 and Pythia; 2.52 +- 0.03 for Chinchilla), then turns
a loss exponent in parameters, L ∝ N^-alpha_N, into one in width: alpha_m = k alpha_N
(Chinchilla: 2.52 x 0.35 = 0.88 +- 0.06, with alpha_N = 0.35 +- 0.02 from Besiroglu et al.'s
replication). Here k is the least-squares slope of ln N on ln m with an intercept per family.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from superkern.analysis.tables import read_csv_columns

BUILTIN = Path(__file__).resolve().parent.parent / "data" / "llm_sizes.csv"
ALPHA_N = (0.35, 0.02)  # Besiroglu et al. 2024 (Chinchilla replication), as the paper uses
# Which count N is: the size in the model's name, every stored parameter, or the Kaplan et al.
# non-embedding count (no token or position embeddings, no untied unembedding). The exact and
# non-embedding columns of the built-in table come from superkern.analysis.param_count.
PARAM_COLUMNS = {"nominal": "params", "exact": "params_exact",
                 "non-embedding": "params_non_embedding"}


@dataclass(frozen=True)
class SizeWidthFit:
    """``ln N = k ln m + ln a_g``: one exponent k, one coefficient a_g per family.

    Attributes:
        k, k_se: the shared exponent and its standard error (``s^2 (X^T X)^-1``).
        r2: R^2 of ln N after removing each family's mean (how well one slope serves all).
        coefficients: family -> a_g (N = a_g m^k).
        n_points, families: as fitted.
    """

    k: float
    k_se: float
    r2: float
    coefficients: dict[str, float] = field(default_factory=dict)
    n_points: int = 0
    families: int = 0

    def alpha_m(self, alpha_n: float = ALPHA_N[0], alpha_n_se: float = ALPHA_N[1]
                ) -> tuple[float, float, float]:
        """``alpha_m = k alpha_N`` with two error bars: in quadrature (independent errors) and
        added linearly (the paper's 2.52 x 0.35 = 0.88 +- 0.06 adds them)."""
        v = self.k * alpha_n
        a, b = self.k * alpha_n_se, alpha_n * self.k_se
        return v, math.hypot(a, b), a + b


def load_size_csv(path: str | Path = BUILTIN, params: str = "nominal"
                  ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(families, m, N)`` from a CSV with columns family, m and the parameter-count column
    :data:`PARAM_COLUMNS` names for ``params`` ('#' comments): ``params`` (nominal),
    ``params_exact`` or ``params_non_embedding``. The built-in table has all three.

    Raises:
        ValueError: an unknown ``params``, or a CSV without that column (named).
    """
    if params not in PARAM_COLUMNS:
        raise ValueError(f"params must be one of {', '.join(PARAM_COLUMNS)}, got {params!r}")
    column = PARAM_COLUMNS[params]
    keys, v = read_csv_columns(path, ("family",), ("m", column))
    return [k[0] for k in keys], v["m"], v[column]


def fit_size_width(families: Sequence[str], m: Sequence[float], params: Sequence[float]
                   ) -> SizeWidthFit:
    """Shared-exponent power law of parameter count in width (see :class:`SizeWidthFit`).

    Raises:
        ValueError: mismatched lengths, non-positive m or N, too few points, or widths that
            do not vary within any family (the slope is then undetermined).
    """
    m_arr = np.asarray(m, dtype=np.float64)
    n_arr = np.asarray(params, dtype=np.float64)
    fams = [str(f) for f in families]
    if not (len(fams) == m_arr.size == n_arr.size):
        raise ValueError(f"families, m, params lengths differ: {len(fams)}, {m_arr.size}, "
                         f"{n_arr.size}")
    bad = ~(np.isfinite(m_arr) & np.isfinite(n_arr) & (m_arr > 0) & (n_arr > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"widths and parameter counts must be finite and > 0 (row {i}: "
                         f"m = {m_arr[i]}, params = {n_arr[i]})")
    names = sorted(set(fams))
    g = np.array([names.index(f) for f in fams])
    x, y = np.log(m_arr), np.log(n_arr)
    # within-family centring: the shared slope is the regression of the centred y on x
    xc = x - np.array([x[g == j].mean() for j in range(len(names))])[g]
    yc = y - np.array([y[g == j].mean() for j in range(len(names))])[g]
    dof = y.size - 1 - len(names)
    if dof < 1:
        raise ValueError(f"{y.size} points cannot fit 1 exponent and {len(names)} coefficients "
                         "with a residual left")
    sxx = float(xc @ xc)
    if sxx == 0.0:
        raise ValueError("no family has two different widths: the exponent is undetermined")
    k = float(xc @ yc) / sxx
    resid = yc - k * xc
    s2 = float(resid @ resid) / dof
    syy = float(yc @ yc)
    coef = {f: float(math.exp(y[g == j].mean() - k * x[g == j].mean()))
            for j, f in enumerate(names)}
    return SizeWidthFit(k=k, k_se=math.sqrt(s2 / sxx), r2=1.0 - float(resid @ resid) / syy
                        if syy > 0 else 1.0, coefficients=coef, n_points=int(y.size),
                        families=len(names))

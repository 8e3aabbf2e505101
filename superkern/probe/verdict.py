"""The superposition verdict, in the paper's sense (Liu, Liu & Gore, arXiv 2505.10465).

- Superposition: more represented rows than dimensions (n_represented > m).
- Strong superposition: (almost) every row is represented (phi_1/2 close to 1, the paper's
  criterion; for LLM heads it is the "non-zero minimum norm" argument of its Fig. 20) while
  n > m. Its signature in the overlaps is mean c^2 ~ 1/m (random-like or ETF-like packing).
- Weak superposition: only some rows are represented, but more than m of them.

phi_1/2 needs rows on the toy model's scale (norm ~1). The verdict uses the raw norms when some
row reaches norm 0.5 and at most 1% of the rows exceed norm 2 (that scale: one outlying row
cannot switch it), otherwise norms divided by the median nonzero norm, and says which. On the
median scale the label is "undetermined" when half the 90th-percentile norm disagrees with
half the median about whether (almost) all rows are represented (most rows in a low group).
mean c^2 counts as "close to 1/m" within a factor of 4 (a choice, reported).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

REPRESENTED_MIN = 0.9       # phi_1/2 at or above this: "all rows represented"
MSQ_FACTOR = 4.0            # m * mean c^2 within [1/4, 4]: "close to 1/m"
TOY_SCALE = (0.5, 2.0)      # rows reach the lower end and (almost) none pass the upper one:
TOY_SCALE_OUTLIERS = 0.01   # at most this fraction above TOY_SCALE[1]; the raw thresholds apply
# m * mean c^2 within this of 1 and norm std/mean below this: what iid Gaussian rows give
# (std/mean ~ 1/sqrt(2m)); trained heads measured here have 0.18-0.21 (SmolLM2, MiniLM)
RANDOM_LIKE = (0.05, 0.1)


def _min_nonzero(norms: Any) -> float:
    nz = norms.norms[norms.norms > 0]
    return float(nz.min()) if nz.numel() else 0.0


def superposition_verdict(*, n: int, m: int, norms: Any, mean_sq: float,
                          mean_sq_centred: Optional[float] = None) -> dict[str, Any]:
    """Classify a head; returns ``label``, ``summary``, ``notes``, ``norm_scale`` and
    ``evidence`` (every number used).

    Args:
        n: nonzero rows in the pairwise statistics. m: width.
        norms: the :class:`~superkern.ops.norms.NormStats` of the analysed rows (zero rows
            included: they count as unrepresented).
        mean_sq, mean_sq_centred: mean c^2 of the rows, and after removing the mean row.
    """
    above = float((norms.norms > TOY_SCALE[1]).double().mean()) if norms.n else 0.0
    raw_scale = norms.max >= TOY_SCALE[0] and above <= TOY_SCALE_OUTLIERS
    if raw_scale:
        phi_half, phi_1, scale = norms.phi_half, norms.phi_1, "raw"
        scale_text = (f"raw row norms (largest norm {norms.max:.3g}, {above:.2%} of rows above "
                      f"{TOY_SCALE[1]:g}: the toy model's scale, where the paper's 1/2 and 1 "
                      "thresholds are defined)")
    else:
        phi_half, phi_1, scale = norms.phi_half_median, norms.phi_1_median, "median"
        why = (f"largest norm {norms.max:.3g} < {TOY_SCALE[0]:g}" if norms.max < TOY_SCALE[0]
               else f"{above:.1%} of rows above norm {TOY_SCALE[1]:g}")
        scale_text = (f"row norms divided by the median nonzero norm {norms.median:.4g} ({why}: "
                      "not the toy model's scale)")
    # With the median scale, the median row counts as represented by construction: when most
    # rows are a low group (untrained), that would call them represented. The same test
    # against half the 90th-percentile norm (the upper group's level) must agree.
    phi_top = math.nan
    if scale == "median":
        nz = norms.norms[norms.norms > 0].double()
        if nz.numel():
            k = max(1, math.ceil(0.9 * nz.numel()))
            top = float(torch.kthvalue(nz, k).values)
            phi_top = float((norms.norms > 0.5 * top).double().mean())
    ratio = n / m
    msq_m = m * mean_sq if math.isfinite(mean_sq) else math.nan
    msq_m_c = m * mean_sq_centred if mean_sq_centred is not None else None
    rows = norms.n  # phi_1/2 counts over every analysed row, zero rows included
    represented = int(round(phi_half * rows))
    evidence = {
        "n": n, "m": m, "n_over_m": ratio, "rows_analysed": rows, "n_zero": norms.n_zero,
        "phi_half": phi_half, "phi_1": phi_1, "scale_rows_above_2": above,
        "phi_half_of_q90": phi_top,
        "n_represented": represented,
        # the paper's "non-zero minimum norm": the smallest nonzero norm (padding rows, all
        # zero, would make it 0 for any head that has them; n_zero counts those)
        "min_norm_over_median": _min_nonzero(norms) / norms.median if norms.median > 0
        else math.nan,
        "m_mean_sq": msq_m, "m_mean_sq_centred": msq_m_c,
        "etf_count_fraction": min(1.0, m * m / (2 * n)) if n else math.nan,
        "thresholds": {"represented_min_phi_half": REPRESENTED_MIN,
                       "m_mean_sq_close_to_1_within_factor": MSQ_FACTOR,
                       "toy_scale_min_norm": TOY_SCALE[0], "toy_scale_max_norm": TOY_SCALE[1],
                       "toy_scale_max_fraction_above": TOY_SCALE_OUTLIERS},
    }
    notes = []
    close = 1 / MSQ_FACTOR <= msq_m <= MSQ_FACTOR if math.isfinite(msq_m) else False
    if n <= m:
        label = "no superposition"
        summary = (f"n = {n} rows fit in m = {m} dimensions (n/m = {ratio:.2f}): every row "
                   "can have its own direction; if the matrix is (m, n), transpose it")
    elif math.isfinite(phi_top) and (phi_half >= REPRESENTED_MIN) != (phi_top >= REPRESENTED_MIN):
        label = "undetermined"
        summary = (f"the row norms form separate groups: {phi_half:.1%} of the rows lie above "
                   f"half the median norm but {phi_top:.1%} above half the 90th-percentile "
                   "norm, and no toy-model scale says which group is represented")
    elif represented <= m:
        label = "no superposition"
        summary = (f"only {represented} rows (phi_1/2 = {phi_half:.3f}) are represented, "
                   f"no more than m = {m}")
    elif phi_half < REPRESENTED_MIN:
        label = "weak superposition"
        summary = (f"{represented} of {rows} rows are represented (phi_1/2 = {phi_half:.3f} < "
                   f"{REPRESENTED_MIN}), more than m = {m} but not all")
    else:
        label = "strong superposition"
        summary = (f"n/m = {ratio:.1f} and phi_1/2 = {phi_half:.3f}: (almost) all {n} rows "
                   f"are represented in m = {m} dimensions")
        if close:
            summary += (f"; mean cos^2 = {mean_sq:.3g} = {msq_m:.2f}/m, within a factor "
                        f"{MSQ_FACTOR:g} of random packing's 1/m (the paper finds LLM heads' "
                        "mean cos^2 scaling as 1/m across widths)")
        elif msq_m < 1 / MSQ_FACTOR:
            notes.append(f"mean cos^2 = {msq_m:.2f}/m is below 1/({MSQ_FACTOR:g} m): the rows "
                         "overlap less than random packing, toward the Welch bound (m kappa^2 "
                         f"= {max(0.0, (n - m) / (n - 1)):.2f})")
        else:
            notes.append(f"mean cos^2 = {msq_m:.2f}/m is not within a factor {MSQ_FACTOR:g} of "
                         "1/m: the rows are more clustered than random packing")
            if msq_m_c is not None and 1 / MSQ_FACTOR <= msq_m_c <= MSQ_FACTOR:
                notes.append(f"after removing the mean row, mean cos^2 = {msq_m_c:.2f}/m: a "
                             "shared direction carries the excess overlap")
    cv = norms.std / norms.mean if norms.mean > 0 else math.nan
    evidence["norm_cv"] = cv
    if label == "strong superposition" and math.isfinite(msq_m) \
            and abs(msq_m - 1) <= RANDOM_LIKE[0] and cv <= RANDOM_LIKE[1]:
        notes.append(f"mean cos^2 within {RANDOM_LIKE[0]:.0%} of 1/m and row norms within "
                     f"{cv:.1%} of each other (std/mean): by these two statistics the rows "
                     "cannot be told from iid random rows, as strong superposition predicts; "
                     "row norm against token frequency (--corpus or --token-counts) can tell "
                     "a trained LM head from noise")
    if label == "strong superposition" and ratio < 2:
        notes.append(f"n/m = {ratio:.2f}: barely more rows than dimensions; the paper's strong "
                     "superposition has n >> m")
    if ratio > 1 and not close and label != "strong superposition" and math.isfinite(msq_m):
        notes.append(f"mean cos^2 = {msq_m:.2f}/m")
    return {"label": label, "summary": summary, "notes": notes, "norm_scale": scale,
            "norm_scale_text": scale_text, "evidence": evidence}

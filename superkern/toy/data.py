"""Feature frequencies p and the data sampler x_i = u_i v_i (SPEC section 2)."""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence, Union

import torch

# p_i may exceed 1 by rounding only (the density sweep at s = 1 gives p_1 = 1 exactly in exact
# arithmetic); anything larger is a user error.
_P_ROUNDING = 1e-12
# An explicit p must sum to E to this relative tolerance.
_SUM_RTOL = 1e-6


def _real(v: Any) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _named_p(n: int, dist: str, alpha: float) -> torch.Tensor:
    """Unnormalised frequencies, fp64. Indices as in the authors' code."""
    if dist == "power":
        i = torch.arange(1, n + 1, dtype=torch.float64)  # i = 1..n
        p = i ** (-alpha)
        if not bool(torch.isfinite(p).all()):  # i^-alpha overflows fp64 (alpha << 0)
            logp = -alpha * torch.log(i)
            p = torch.exp(logp - logp.max())  # the same ratios, scaled to max 1
        return p
    if dist == "exponential":
        return torch.exp(-torch.arange(n, dtype=torch.float64) / 400.0)  # i = 0..n-1
    if dist == "linear":
        return (n - torch.arange(n, dtype=torch.float64)) / n  # i = 0..n-1
    raise ValueError(f"unknown dist {dist!r}; choose from ('power', 'exponential', 'linear') "
                     "or a tuple of n floats")


def toy_probabilities(spec: Union[Any, tuple]) -> torch.Tensor:
    """Feature frequencies p (n,) in float64, with sum_i p_i = E.

    - power: p_i ∝ i^-alpha, i = 1..n; exponential: p_i ∝ exp(-i/400), i = 0..n-1;
      linear: p_i ∝ (n - i)/n, i = 0..n-1; each normalised to sum E.
    - density sweep (``density_s`` = s): alpha = 1 normalised to sum 1, then
      p *= 1 + s (1/p_1 - 1) (sum from 1 at s = 0 to H_n at s = 1, where p_1 = 1).
    - an explicit tuple is used as given; it must lie in [0, 1] and sum to E.

    Args:
        spec: a :class:`~superkern.toy.config.ToyConfig`, or a tuple
            ``(n, dist, alpha[, E[, density_s]])``.

    Returns:
        torch.float64 tensor of shape (n,).

    Raises:
        ValueError: any p_i > 1 (names the index, the value and E), unknown dist, a bad
            explicit p.
    """
    if isinstance(spec, (tuple, list)):
        if not 3 <= len(spec) <= 5:
            raise ValueError("spec tuple must be (n, dist, alpha[, E[, density_s]]), "
                             f"got {len(spec)} entries")
        n, dist, alpha = spec[:3]
        E = spec[3] if len(spec) > 3 else 1.0
        s = spec[4] if len(spec) > 4 else None
    else:
        n, dist, alpha, E, s = spec.n, spec.dist, spec.alpha, spec.E, spec.density_s
    if isinstance(n, numbers.Integral) and not isinstance(n, bool):
        n = int(n)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not (_real(E) and math.isfinite(E) and E > 0):
        raise ValueError(f"E must be a finite number > 0, got {E!r}")
    if s is not None and not (_real(s) and 0.0 <= s <= 1.0):
        raise ValueError(f"density_s must be a number in [0, 1], got {s!r}")
    if dist == "power" and not (_real(alpha) and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number for dist='power', got {alpha!r}")
    if isinstance(dist, (tuple, list)):
        if not all(_real(v) for v in dist):
            bad = next(v for v in dist if not _real(v))
            raise ValueError(f"an explicit p must hold n numbers; it holds {bad!r}")
        p = torch.tensor([float(v) for v in dist], dtype=torch.float64)
        if p.numel() != n:
            raise ValueError(f"explicit p has {p.numel()} entries but n={n}")
        bad = ~torch.isfinite(p) | (p < 0)
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            raise ValueError(f"explicit p must be finite and >= 0; p[{i}] = {float(p[i])!r}")
        total = float(p.sum())
        if abs(total - E) > _SUM_RTOL * E:
            raise ValueError(f"explicit p sums to {total!r} but E={E!r}; pass E={total!r} or "
                             "rescale p")
    else:
        try:
            p = _named_p(n, dist, float(alpha) if dist == "power" else 1.0)
        except RuntimeError as exc:  # torch cannot allocate n float64 values
            raise ValueError(f"n={n}: cannot hold its feature frequencies "
                             f"({str(exc).splitlines()[0]})") from None
        p = p / p.sum()
        if s is not None:
            p = p * (1.0 + s * (1.0 / p[0] - 1.0))
        else:
            p = p * E
    if bool((p > 1.0 + _P_ROUNDING).any()):
        i = int(torch.nonzero(p > 1.0 + _P_ROUNDING)[0])
        named = isinstance(dist, str)
        raise ValueError(
            f"feature frequency p[{i}] (feature {i + 1} of n={n}) = {float(p[i]):.10g} > 1 "
            f"with E={float(p.sum()):.10g} (dist={dist if named else 'explicit'}"
            + (f", alpha={alpha}); lower E or alpha" if named else "); every p_i must be <= 1"))
    if not bool((p.float() > 0).any()):  # the samplers draw against fp32 p
        raise ValueError(f"every feature frequency is 0 in fp32 (E={float(E)!r}, "
                         f"sum p = {float(p.sum())!r}): no feature would ever be active; "
                         "raise E")
    return p.clamp_(max=1.0)


def sample_batch(p: torch.Tensor, batch: int, generator: torch.Generator, *,
                 check: bool = True) -> torch.Tensor:
    """One fresh batch x (batch, n), fp32: x_i = u_i v_i, u_i ~ Bernoulli(p_i), v_i ~ U(0, 2).

    Draws exactly as the authors' code, ``(rand(B, n) < p).float() * rand(B, n) * 2``: first
    the Bernoulli uniforms, then the magnitudes, both from ``generator``. p is compared in fp32.

    Args:
        p: (n,) frequencies on the generator's device.
        batch: B >= 1.
        generator: a ``torch.Generator`` on p's device (its state advances by 2 B n draws).
        check: verify that every p_i lies in [0, 1] (one read of a value from the device).
            The trainers pass False: their p comes from :func:`toy_probabilities`, which
            checked it once, and a check per step would stall a GPU queue every step.
    """
    if not isinstance(p, torch.Tensor):
        raise ValueError(f"p must be a torch tensor of frequencies (toy_probabilities gives "
                         f"one), got a {type(p).__name__}")
    if p.dim() != 1:
        raise ValueError(f"p must be 1-D (n,), got shape {tuple(p.shape)}")
    if check and p.numel() and not bool(((p >= 0) & (p <= 1)).all()):  # NaN fails both
        raise ValueError(f"p must lie in [0, 1]; got values in [{float(p.min())}, "
                         f"{float(p.max())}]")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    if generator.device.type != p.device.type:
        raise ValueError(f"generator lives on {generator.device} but p on {p.device}")
    n = p.shape[0]
    p32 = p.to(torch.float32)
    # fp32 whatever torch's default dtype (the authors' code ran with fp32)
    u = torch.rand((batch, n), generator=generator, device=p.device, dtype=torch.float32) < p32
    v = torch.rand((batch, n), generator=generator, device=p.device, dtype=torch.float32)
    return v.mul_(u).mul_(2.0)  # = u.float() * v * 2 bit for bit, without two temporaries


def data_groups(configs: Sequence[Any]) -> tuple[list[int], list[Any], torch.Tensor]:
    """Models with the same (p, data seed) share each batch: ``(group, firsts, p)`` with
    ``group[i]`` the data group of ``configs[i]`` (groups in first-appearance order),
    ``firsts[g]`` the first config of group g, and ``p`` (G, n) float32 their frequencies."""
    keys: dict = {}
    group = [keys.setdefault(c.data_key, len(keys)) for c in configs]
    firsts = [configs[group.index(g)] for g in range(len(keys))]
    return group, firsts, torch.stack([toy_probabilities(c).float() for c in firsts])


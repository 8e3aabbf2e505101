"""``ToyConfig``: one toy-model training run (SPEC section 2), frozen, validated, hashable.

Presets fill the fields a user leaves as ``None``; an explicit value always wins. The filled
values are stored on the instance, so ``to_dict()`` / ``from_dict()`` round-trip and
``run_id`` hashes what the run will actually do, not how it was spelled.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any, Optional, Union

PRESETS = ("small", "large")
MAX_N = 2 ** 31 - 1  # features: the Triton toy kernels index them with 32-bit integers
DISTS = ("power", "exponential", "linear")
PRECISIONS = ("fp32", "tf32", "tf32x3", "bf16")
TORCH_PRECISIONS = ("fp32", "tf32")  # bf16 / tf32x3 need the fused Triton kernel
BACKENDS = ("auto", "torch", "triton")
SCHEDULES = ("cosine", "constant")

# AdamW constants of the authors' optimizer (exp/adamw.py): fixed, not configurable.
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8

# Fields that change only what is recorded about a run (its loss curve, its test loss), never
# W, b or the training losses: left out of run_id, and of analysis cells.
RECORD_FIELDS = ("log_every", "test_batches")
_NOT_HASHED = ("preset",) + RECORD_FIELDS

Dist = Union[str, tuple]


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def init_seed(seed: int) -> int:
    """Seed of the CPU generator that draws W and b (the config seed itself)."""
    return int(seed)


def data_seed(seed: int) -> int:
    """Seed of the data generator: derived from, and independent of, the init stream."""
    return _splitmix64(int(seed) ^ 0x5EED_DA7A) & 0x7FFFFFFFFFFFFFFF


@dataclass(frozen=True)
class ToyConfig:
    """One toy model y = ReLU(W W^T x + b) and how to train it (SPEC section 2).

    Fields left ``None`` are filled by ``preset``:

    ========== ======================= ==============================================
    field      small (Figs. 3-7)       large (Fig. 1)
    ========== ======================= ==============================================
    n          1000                    10240
    alpha      1.0                     1.2
    steps      20000                   40000 (the paper's prose: 20000)
    batch      2048                    8192 (the paper's prose: 2048)
    lr         1e-2                    0.02 (8/m)^0.25
    lr_b       = lr                    2/m
    warmup     2000                    int(0.05 steps)
    loss_scale 1                       100
    ========== ======================= ==============================================

    With ``preset=None`` the defaults are lr 1e-2, lr_b = lr, warmup 0, loss_scale 1, and n,
    steps, batch must be given. Schedule: ``lr(s) = peak * mult(s)``, s = 1..steps, with
    ``mult = s / warmup`` for s < warmup, else a cosine from 1 to ``lr_min_ratio``; when
    ``warmup >= steps`` there is no warm-up at all (the authors' ``get_lr``).

    Args:
        n: features (rows of W). m: width (columns of W), 1 <= m <= n.
        gamma: weight decay (>= 0, decoupled decay) or growth (< 0, row norms pulled to 1).
        dist: "power" (p_i ∝ i^-alpha), "exponential" (exp(-i/400)), "linear" ((n-i)/n) or an
            explicit tuple of n probabilities that must sum to E.
        alpha: the power-law data exponent. E: activation density sum_i p_i.
        density_s: activation-density sweep value s in [0, 1] (power, alpha = 1, E = 1 only):
            p *= 1 + s (1/p_1 - 1).
        steps, batch: training steps and batch size B.
        lr, lr_b: peak learning rates of W and b. warmup: warm-up steps.
        schedule: "cosine" (warm-up + cosine) or "constant". lr_min_ratio: cosine floor / peak.
        loss_scale: multiplier of the back-propagated loss (keeps gradients above Adam's eps).
        seed: seeds the init generator and (through :func:`data_seed`) the data generator.
        precision: "fp32" (tf32 off; the reference), "tf32"; "tf32x3", "bf16" (Triton only).
        backend: "auto", "torch" or "triton". log_every: loss-curve sampling (0 = none).
        test_batches: fresh batches (of size ``batch``) on which the final model's test loss
            is measured (the paper: 100); 0 = none. Not part of ``run_id``.
    """

    n: Optional[int] = None
    m: Optional[int] = None
    gamma: float = 0.0
    dist: Dist = "power"
    alpha: Optional[float] = None
    E: float = 1.0
    density_s: Optional[float] = None
    steps: Optional[int] = None
    batch: Optional[int] = None
    preset: Optional[str] = "small"
    lr: Optional[float] = None
    lr_b: Optional[float] = None
    warmup: Optional[int] = None
    schedule: str = "cosine"
    lr_min_ratio: float = 0.05
    loss_scale: Optional[float] = None
    seed: int = 0
    precision: str = "fp32"
    backend: str = "auto"
    log_every: int = 100
    test_batches: int = 0

    def __post_init__(self) -> None:
        _fill_and_validate(self)

    # ---- derived values -------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        """Stable 16-hex-digit hash of every field that changes W, b or the losses (alpha only
        for the power law: exponential, linear and explicit p ignore it)."""
        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        if d["dist"] != "power":
            d.pop("alpha")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def data_seed(self) -> int:
        return data_seed(self.seed)

    @property
    def init_seed(self) -> int:
        return init_seed(self.seed)

    @property
    def data_key(self) -> tuple:
        """Models with equal keys see identical batches (same p bit for bit, same data seed)."""
        from superkern.toy.data import toy_probabilities
        p = toy_probabilities(self)
        return (self.n, hashlib.sha256(p.numpy().tobytes()).hexdigest(), self.data_seed)

    def replace(self, **changes: Any) -> "ToyConfig":
        """A copy with fields changed. Fields the preset filled are filled again for the new
        values (``replace(m=20)`` of a large config gets lr = 0.02 (8/20)^0.25); fields that
        were given explicitly keep their values unless changed."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown ToyConfig field(s) {unknown}")
        refill = {k: None for k in getattr(self, "_filled", ()) if k not in changes}
        return dataclasses.replace(self, **{**refill, **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields (explicit p as a list)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(d["dist"], tuple):
            d["dist"] = list(d["dist"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ToyConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"from_dict needs a dict of ToyConfig fields, got "
                             f"{type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ToyConfig field(s) {unknown}; known: {sorted(names)}")
        d = {k: (int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool)
                 and k in _INT_FIELDS else v) for k, v in d.items()}
        if isinstance(d.get("dist"), list):
            d["dist"] = tuple(d["dist"])
        # Fields equal to what the preset fills count as filled again, so that replace()
        # (e.g. of m in the large preset, whose lr depends on m) refills them as it would have.
        # A dict without "preset" means the class default, as the constructor does; values
        # the preset rule cannot take are left to the constructor's validation.
        preset = d.get("preset", cls.__dataclass_fields__["preset"].default)
        steps = d.get("steps")
        if (_is_int(d.get("m")) and d["m"] >= 1 and preset in PRESETS + (None,)
                and (steps is None or (_is_int(steps) and steps >= 1))):
            given = dict(d)
            defaults = preset_defaults(preset, d["m"], steps)
            for key, value in defaults.items():
                want = given.get("lr") if key == "lr_b" and value is None else value
                if want is not None and given.get(key) == want and not isinstance(want, bool):
                    d[key] = None
        return cls(**d)


# ---- filling and validation (before any work) -----------------------------------------------

def preset_defaults(preset: Optional[str], m: int, steps: Optional[int]) -> dict[str, Any]:
    """The values a preset fills in for a model of width m (lr_b None: equal to lr)."""
    if preset == "small":
        return dict(n=1000, alpha=1.0, steps=20000, batch=2048, lr=1e-2, lr_b=None,
                    warmup=2000, loss_scale=1.0)
    if preset == "large":
        steps = 40000 if steps is None else steps
        return dict(n=10240, alpha=1.2, steps=40000, batch=8192, lr=0.02 * (8.0 / m) ** 0.25,
                    lr_b=2.0 / m, warmup=int(steps * 0.05), loss_scale=100.0)
    return dict(n=None, alpha=1.0, steps=None, batch=None, lr=1e-2, lr_b=None, warmup=0,
                loss_scale=1.0)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v) + 0.0  # -0.0 is 0.0: equal configs must share a run id


_INT_FIELDS = ("m", "n", "steps", "batch", "warmup", "seed", "log_every", "test_batches")


def _fill_and_validate(c: ToyConfig) -> None:
    put = lambda k, v: object.__setattr__(c, k, v)  # noqa: E731 - frozen dataclass fill-in
    for key in _INT_FIELDS:  # numpy integers become ints (bools stay, to be refused)
        v = getattr(c, key)
        if isinstance(v, numbers.Integral) and not isinstance(v, (bool, int)):
            put(key, int(v))
    if hasattr(c.dist, "tolist") and not isinstance(c.dist, str):  # a numpy / torch vector
        put("dist", tuple(c.dist.tolist()))
    if c.preset == "none":  # how TOML (which has no null) and the CLI write None
        put("preset", None)
    if c.preset is not None and c.preset not in PRESETS:
        raise ValueError(f"unknown preset {c.preset!r}; choose from {PRESETS} or None "
                         "('none' in TOML)")
    if c.m is None:
        raise ValueError("m (the width) is required")
    if not _is_int(c.m) or c.m < 1:
        raise ValueError(f"m must be an integer >= 1, got {c.m!r}")
    explicit_p, n_from_p = None, False
    if isinstance(c.dist, (tuple, list)):
        bad = [v for v in c.dist if isinstance(v, bool) or not isinstance(v, numbers.Real)]
        if bad:
            raise ValueError(f"an explicit dist must be n probabilities (numbers); it holds "
                             f"{bad[0]!r}")
        explicit_p = tuple(float(v) for v in c.dist)
        put("dist", explicit_p)
        if c.n is None:
            put("n", len(explicit_p))
            n_from_p = True
    elif c.dist not in DISTS:
        raise ValueError(f"unknown dist {c.dist!r}; choose from {DISTS} or a tuple of n floats")
    for key in ("n", "steps", "batch"):  # before the preset rule uses them
        v = getattr(c, key)
        if v is not None and (not _is_int(v) or v < 1):
            raise ValueError(f"{key} must be an integer >= 1, got {v!r}")
    if c.n is not None and c.n > MAX_N:
        raise ValueError(f"n={c.n} features is more than {MAX_N} (the Triton toy kernels "
                         "index features with 32-bit integers)")
    defaults = preset_defaults(c.preset, c.m, c.steps)
    # Remembered so that replace() fills them again for the new values.
    filled = {k for k in defaults if getattr(c, k) is None}
    for key in filled:
        put(key, defaults[key])
    if n_from_p:
        filled.add("n")
    for key in ("n", "steps", "batch"):
        v = getattr(c, key)
        if v is None:
            raise ValueError(f"{key} is required when preset is None")
        if not _is_int(v) or v < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {v!r}")
    if c.m > c.n:
        raise ValueError(f"m={c.m} exceeds n={c.n}: the toy model needs m <= n")
    if explicit_p is not None and len(explicit_p) != c.n:
        raise ValueError(f"explicit p has {len(explicit_p)} entries but n={c.n}")
    put("gamma", _finite(c.gamma, "gamma"))
    put("alpha", _finite(c.alpha, "alpha"))
    put("E", _finite(c.E, "E"))
    if c.E <= 0:
        raise ValueError(f"E (activation density) must be > 0, got {c.E}")
    if c.lr_b is None:
        filled.add("lr_b")
        put("lr_b", c.lr)
    put("_filled", frozenset(filled))
    for key in ("lr", "lr_b", "loss_scale"):
        put(key, _finite(getattr(c, key), key))
        if getattr(c, key) <= 0:
            raise ValueError(f"{key} must be > 0, got {getattr(c, key)}")
    if not _is_int(c.warmup) or c.warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {c.warmup!r}")
    if c.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {c.schedule!r}; choose from {SCHEDULES}")
    put("lr_min_ratio", _finite(c.lr_min_ratio, "lr_min_ratio"))
    if not 0.0 <= c.lr_min_ratio <= 1.0:
        raise ValueError(f"lr_min_ratio must lie in [0, 1], got {c.lr_min_ratio}")
    if not _is_int(c.seed) or not 0 <= c.seed < 2 ** 63:
        raise ValueError(f"seed must be an integer in [0, 2^63), got {c.seed!r}")
    if not _is_int(c.log_every) or c.log_every < 0:
        raise ValueError(f"log_every must be an integer >= 0, got {c.log_every!r}")
    if not _is_int(c.test_batches) or c.test_batches < 0:
        raise ValueError(f"test_batches must be an integer >= 0, got {c.test_batches!r}")
    if c.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {c.precision!r}; choose from {PRECISIONS}")
    if c.backend not in BACKENDS:
        raise ValueError(f"unknown backend {c.backend!r}; choose from {BACKENDS}")
    if c.backend == "torch" and c.precision not in TORCH_PRECISIONS:
        raise ValueError(f"precision {c.precision!r} needs the triton backend; the torch "
                         f"backend supports {TORCH_PRECISIONS}")
    if c.density_s is not None:
        put("density_s", _finite(c.density_s, "density_s"))
        if not 0.0 <= c.density_s <= 1.0:
            raise ValueError(f"density_s must lie in [0, 1], got {c.density_s}")
        if c.dist != "power" or c.alpha != 1.0 or c.E != 1.0:
            raise ValueError("density_s (the activation-density sweep) starts from "
                             f"dist='power', alpha=1, E=1; got dist={c.dist!r}, "
                             f"alpha={c.alpha}, E={c.E}")
    # Computes p and rejects p_i > 1 (index, value, E) or a bad explicit p.
    from superkern.toy.data import toy_probabilities
    toy_probabilities(c)

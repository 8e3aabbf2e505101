"""Public entry points: ``train(config)`` and ``train_many(configs)``."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch

from superkern.backend import resolve_device
from superkern.toy.backend import resolve_toy_backend, triton_toy
from superkern.toy.batched import BatchedTrainer
from superkern.toy.config import ToyConfig
from superkern.toy.reference import train_reference
from superkern.toy.result import ToyResult

ProgressArg = Union[None, bool, Callable[[int, int], None]]

# Launch-grouping policies of train_many / plan_groups (the first is the default).
GROUP_BY = ("bucket", "width", "none")
# Smallest padded width of the Triton kernels' register tiles (tl.dot's minimum); must equal
# the rule of ``superkern.triton._toy_common.block_m`` (tests check that they agree).
_MIN_BUCKET = 16


def width_bucket(m: int) -> int:
    """The padded width the Triton toy kernels use for width m: the next power of two, at
    least 16 (pure python, the same rule as ``superkern.triton._toy_common.block_m``).

    ``train_many(group_by="bucket")`` never puts two widths with different buckets in one
    launch, so no model is padded past the width its kernels would pad it to anyway.
    """
    m = int(m)
    if m < 1:
        raise ValueError(f"width m must be >= 1, got {m}")
    return max(_MIN_BUCKET, 1 << (m - 1).bit_length())


def _check_group_by(group_by: str) -> None:
    if group_by not in GROUP_BY:
        raise ValueError(f"unknown group_by {group_by!r}; choose from {GROUP_BY}")


def _device(device) -> torch.device:
    return resolve_device(device)  # None: CUDA when available; a bad device is a ValueError


def _check_progress(progress: Any) -> None:
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise ValueError(f"progress must be None, True/False or a callable(done, total), got "
                         f"{progress!r}")


def train(config: ToyConfig, *, device: Optional[Union[str, torch.device]] = None,
          progress: ProgressArg = None) -> ToyResult:
    """Train one toy model (SPEC section 2).

    The torch backend runs :func:`~superkern.toy.reference.train_reference` (autograd, fp32
    with tf32 off); the triton backend runs the fused kernels as an instance axis of one.

    Args:
        config: the run.
        device: "cpu", "cuda", ...; default CUDA when available.
        progress: None, True (a tqdm bar of steps) or ``callable(steps_done, steps_total)``,
            as :func:`train_many`'s.

    Raises:
        ValueError: a backend / precision that cannot run on this device (before any work).
    """
    if not isinstance(config, ToyConfig):
        raise ValueError(f"config must be a ToyConfig, got {type(config).__name__}")
    _check_progress(progress)
    dev = _device(device)
    backend = resolve_toy_backend(config.backend, dev, config.precision)
    make, close = _progress_fn(progress, config.steps)
    try:
        if backend == "torch":
            return train_reference(config, dev, progress=make(0, 1))
        tr = BatchedTrainer([config], dev, backend="triton", triton_mod=triton_toy()[0])
        return tr.results(tr.run(progress=make(0, 1)))[0]
    finally:
        close()


def plan_groups(configs: Sequence[ToyConfig], device: torch.device, group_by: str = "bucket"
                ) -> list[tuple[str, list[int]]]:
    """Partition config indices into launch groups: equal (resolved backend, n, steps, batch,
    precision, log_every), and further split by width according to ``group_by``:

    - "bucket": equal :func:`width_bucket` (m padded as the kernels pad it), the default;
    - "width": equal m (no padding at all, more launches);
    - "none": no split (every model padded to its group's largest m).

    Resolves (and so validates) every backend first. Triton groups are split into launches of
    at most 65535 models and checked against the kernels' size limits
    (:func:`superkern.triton.toy.launch_limits`), so that no launch fails after others ran.

    Returns:
        ``[(backend, [indices]), ...]`` in first-appearance order.

    Raises:
        ValueError: an unknown ``group_by``, a non-config, a backend that cannot run here, a
            launch the Triton kernels cannot take.
    """
    _check_group_by(group_by)
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        if not isinstance(c, ToyConfig):
            raise ValueError(f"configs[{i}] must be a ToyConfig, got {type(c).__name__}")
        be = resolve_toy_backend(c.backend, device, c.precision)
        width = {"bucket": width_bucket(c.m), "width": c.m, "none": None}[group_by]
        key = (be, c.n, c.steps, c.batch, c.precision, c.log_every, width)
        groups.setdefault(key, []).append(i)
    out = []
    for key, idx in groups.items():
        if key[0] != "triton":
            out.append((key[0], idx))
            continue
        mod = triton_toy()[0]
        for k in range(0, len(idx), mod.MAX_INSTANCES):
            part = idx[k:k + mod.MAX_INSTANCES]
            c = configs[part[0]]
            why = mod.launch_limits(c.n, c.batch, max(configs[i].m for i in part), len(part),
                                    device, c.precision)
            if why is not None:
                raise ValueError(f"configs[{part[0]}] (n={c.n}, batch={c.batch}, m={c.m}) "
                                 f"cannot train on the triton backend: {why}")
            out.append((key[0], part))
    return out


def _progress_fn(progress: ProgressArg, total: int):
    """(per-group callback factory, closer). ``True`` shows a tqdm bar of model-steps."""
    if progress is None or progress is False:
        return (lambda done_before, size: None), (lambda: None)
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="model-step", unit_scale=True)
        state = {"last": 0}

        def make(done_before, size):
            def cb(s, steps):
                now = done_before + s * size
                bar.update(now - state["last"])
                state["last"] = now
            return cb
        return make, bar.close

    def make(done_before, size):
        return lambda s, steps: progress(done_before + s * size, total)
    return make, (lambda: None)


def train_many(configs: Sequence[ToyConfig], *, device: Optional[Union[str, torch.device]] = None,
               progress: ProgressArg = None, group_by: str = "bucket") -> list[ToyResult]:
    """Train many toy models, sharing launches where exact (SPEC section 2).

    Configs with the same n, steps, batch, precision, log_every and resolved backend (and,
    by default, the same width bucket) train together on an instance axis (W padded to the
    group's largest m; models with the same p and data seed share each batch). With the torch
    backend each result equals training that config alone with :func:`train` (the reference)
    up to floating-point rounding: same init, same batches. The grouping never changes which
    init or batches a model sees (each launch seeds its data groups afresh; the triton stream
    is keyed by data seed and step), only the padding and so the rounding.

    Args:
        configs: the runs, in any order; results come back in the same order.
        device: as :func:`train`.
        progress: None, True (tqdm bar) or ``callable(model_steps_done, model_steps_total)``.
        group_by: how widths share a launch: "bucket" (default: same :func:`width_bucket`,
            i.e. the power-of-two width the Triton kernels pad to), "width" (same m) or
            "none" (all widths together, padded to the largest); see :func:`plan_groups`.

    Raises:
        ValueError: an unknown ``group_by``, any config whose backend / precision cannot run
            here, before any work.
    """
    if isinstance(configs, ToyConfig):
        raise ValueError("train_many takes a list of ToyConfigs; for one model use "
                         "superkern.train(config)")
    _check_progress(progress)
    configs = list(configs)
    dev = _device(device)
    plan = plan_groups(configs, dev, group_by)
    total = sum(c.steps for c in configs)
    make, close = _progress_fn(progress, total)
    out: list[Optional[ToyResult]] = [None] * len(configs)
    done = 0
    try:
        for backend, idx in plan:
            group = [configs[i] for i in idx]
            tr = BatchedTrainer(group, dev, backend=backend,
                                triton_mod=triton_toy()[0] if backend == "triton" else None)
            seconds = tr.run(make(done, len(idx)))
            for i, r in zip(idx, tr.results(seconds)):
                out[i] = r
            done += sum(c.steps for c in group)
    finally:
        close()
    return out  # type: ignore[return-value]

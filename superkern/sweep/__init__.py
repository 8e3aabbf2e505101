"""Resumable sweeps of the toy model: experiment grids, launches, a crash-safe JSONL store.

Data flows one way: experiment TOML -> config dicts -> validated ``ToyConfig`` s -> launches
-> ``superkern.toy.train_many`` -> one JSONL row per model. Analysis (``superkern.analysis``)
only reads the rows.

The package is callable: ``superkern.sweep("fig1", quick=True)`` runs :func:`sweep`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from superkern._callable import make_callable
from superkern.sweep.grid import (Experiment, Launch, apply_overrides, apply_variant,
                                  build_configs, builtin_experiments, expand, group_configs,
                                  load_experiment)
from superkern.sweep.runner import RESULTS_NAME, SweepSummary, run_sweep
from superkern.sweep.shard import parse_shard, results_files
from superkern.sweep.store import ResultsStore, read_jsonl

__all__ = ["Experiment", "Launch", "RESULTS_NAME", "ResultsStore", "SweepSummary",
           "apply_overrides", "apply_variant", "build_configs", "builtin_experiments",
           "default_out", "expand",
           "group_configs", "load_experiment", "parse_shard", "prepare", "read_jsonl",
           "results_files", "run_sweep", "sweep"]


def prepare(spec: str, *, quick: bool = False, variants: Sequence[str] = (),
            overrides: Sequence[str] = ()) -> tuple[Experiment, list[Any]]:
    """Load an experiment, apply ``quick``/variants/overrides, expand and validate every config.

    Returns:
        ``(experiment, configs)``; raises ValueError before any work if a config is invalid.
    """
    variants, overrides = _names(variants, "variants"), _names(overrides, "overrides")
    exp = load_experiment(spec)
    if quick:
        exp = apply_variant(exp, "quick")
    for name in variants:
        exp = apply_variant(exp, name)
    exp = apply_overrides(exp, overrides)
    return exp, build_configs(expand(exp))


def _names(value: Any, what: str) -> list[str]:
    """A string is one item (iterating it would give its characters); a dict of overrides is
    ``{key: value}`` written as TOML values."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and what == "overrides":
        import json

        return [f"{k}={json.dumps(v)}" for k, v in value.items()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a string or a list of strings"
                         + (" (or a dict {key: value})" if what == "overrides" else "")
                         + f", got {value!r}")
    return list(value)


def default_out(exp: Experiment, quick: bool) -> Path:
    """Where a sweep writes when no folder is given: ``runs/<name>[-quick]``."""
    return Path("runs") / (exp.name + ("-quick" if quick else ""))


def sweep(spec: str, out_dir: Optional[str | Path] = None, *, quick: bool = False,
          variants: Sequence[str] = (), overrides: Sequence[str] = (),
          device: Optional[str] = None, max_instances: Optional[int] = None,
          progress: bool = True, save_weights: Optional[bool] = None, keep_going: bool = False,
          train_fn: Optional[Callable[..., Sequence[Any]]] = None,
          group_by: Optional[str] = None,
          shard: Optional[tuple[int, int] | str] = None) -> SweepSummary:
    """Run (or resume) an experiment: the library function behind ``superkern sweep``.

    Args:
        spec: a TOML path or a built-in name (``fig1``, ``small``, ``density``, ...).
        out_dir: output folder (default ``runs/<name>[-quick]``).
        quick: apply the experiment's ``quick`` variant (a few CPU minutes).
        variants: further named variants to apply, in order.
        overrides: ``KEY=VALUE`` strings, values parsed as TOML (``m=[10,20]``).
        device, max_instances, save_weights: override the experiment's ``[sweep]`` options.
        progress: tqdm bar on stderr.
        keep_going: continue after a failed launch.
        train_fn: trainer to use instead of ``superkern.toy.train_many``.
        group_by: width grouping inside each launch ("bucket", "width", "none"); default the
            experiment's ``[sweep] group_by``, else the trainer's default ("bucket").
        shard: ``(K, N)`` or ``"K/N"``: run shard K of N only (``superkern.sweep.shard``).
    """
    if isinstance(shard, str):
        shard = parse_shard(shard)
    exp, configs = prepare(spec, quick=quick, variants=variants, overrides=overrides)
    opts = dict(exp.sweep)
    if out_dir is None:
        out_dir = default_out(exp, quick)
    manifest = {"experiment": exp.name, "source": exp.source, "applied": list(exp.applied),
                "base": exp.base, "axes": exp.axes, "description": exp.description,
                "paper": exp.paper, "models": len({c.run_id for c in configs})}
    return run_sweep(
        configs, out_dir, experiment=exp.name, train_fn=train_fn,
        device=device if device is not None else opts.get("device"),
        max_instances=opts.get("max_instances", 32) if max_instances is None else max_instances,
        progress=progress,
        save_weights=bool(opts.get("save_weights", True) if save_weights is None
                          else save_weights),
        keep_going=keep_going, manifest=manifest,
        group_by=group_by if group_by is not None else opts.get("group_by"), shard=shard)


make_callable(__name__, lambda: sweep)  # superkern.sweep("fig1", quick=True) runs sweep()

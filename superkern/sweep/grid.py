"""Experiment grids: TOML files -> expanded config dicts -> validated configs -> launches.

An experiment file has these tables (all but ``[grid]`` optional)::

    [experiment]                 # name, description, paper, aliases = ["fig4b", ...]
    [base]                       # fields shared by every config (n, steps, preset, ...)
    [grid]                       # axes; the grid is their cartesian product, in file order
    m = [8, 16, 32]              #   a list of values,
    gamma = {linspace = [-1, 1, 10]}          # a generator (linspace / arange / geomspace /
                                              #   powers_of_2 / logspace_int),
    data = [{dist = "exponential"}, {dist = "power", alpha = 1.2}]
                                 #   or a list of tables, merged into the config (zipped axes)
    [sweep]                      # runner options: max_instances, device, save_weights,
                                 #   group_by (train_many's width grouping)
    [variants.quick]             # named overrides: flat keys, as with --set

``seeds`` is accepted as an alias of the ``seed`` axis. Values are validated by building every
``ToyConfig`` before any training starts.
"""
from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from superkern.sweep import engine

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SWEEP_OPTIONS = ("max_instances", "device", "save_weights", "group_by")
ALIASES = {"seeds": "seed"}
# Fields that must agree for configs to share one instance-batched launch.
LAUNCH_KEY = ("n", "steps", "batch", "precision", "backend", "preset", "log_every")
# Order before chunking: width first, so a launch whose W is padded to its largest m wastes
# little; then equal feature frequencies next to each other (an engine shares each sampled
# batch among instances with equal p and seed).
_SORT_KEY = ("m", "dist", "alpha", "E", "density_s", "gamma", "seed")


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment file (see the module docstring)."""

    name: str
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    sweep: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    paper: str = ""
    source: str = ""
    applied: tuple[str, ...] = ()  # variants and overrides applied, for provenance

    def size(self) -> int:
        """Number of configs the grid expands to."""
        return math.prod(len(v) for v in self.axes.values()) if self.axes else 1


@dataclass(frozen=True)
class Launch:
    """Configs trained together in one ``train_many`` call."""

    key: tuple[Any, ...]
    configs: tuple[Any, ...]

    @property
    def steps(self) -> int:
        return int(getattr(self.configs[0], "steps"))


def builtin_experiments() -> dict[str, Path]:
    """Built-in experiment names (and aliases) -> TOML path."""
    out: dict[str, Path] = {}
    for entry in (resources.files("superkern") / "experiments").iterdir():
        if not entry.name.endswith(".toml"):
            continue
        path = Path(str(entry))
        out[path.stem] = path
        meta = tomllib.loads(path.read_text(encoding="utf-8")).get("experiment", {})
        for alias in meta.get("aliases", []):
            out.setdefault(str(alias), path)
    return dict(sorted(out.items()))


def load_experiment(spec: str) -> Experiment:
    """Load an experiment from a TOML path or a built-in name (``fig1``, ``small``, ...)."""
    path = Path(spec)
    if not path.is_file():
        builtins = builtin_experiments()
        if spec not in builtins:
            raise ValueError(f"no experiment file {spec!r} and no built-in of that name; "
                             f"built-ins: {', '.join(builtins)}")
        path = builtins[spec]
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML (UTF-8 text): {exc}") from None
    return parse_experiment(doc, source=str(path))


def _unaliased(table: Mapping[str, Any], where: str, source: str) -> dict[str, Any]:
    """``table`` with alias keys renamed (``seeds`` -> ``seed``); a field set under two
    names is an error, not a silent choice of the last."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for k, v in table.items():
        key = ALIASES.get(k, k)
        if key in out:
            raise ValueError(f"{source}: [{where}] sets {key!r} twice (as {spelled[key]!r} and "
                             f"{k!r}); keep one")
        out[key], spelled[key] = v, k
    return out


def parse_experiment(doc: Mapping[str, Any], source: str = "") -> Experiment:
    """Build an :class:`Experiment` from a parsed TOML document."""
    extra = sorted(set(doc) - {"experiment", "base", "grid", "sweep", "variants"})
    if extra:
        raise ValueError(f"{source}: unknown table(s) {extra}; expected experiment, base, grid, "
                         "sweep, variants")
    for key in ("experiment", "base", "grid", "sweep", "variants"):
        if not isinstance(doc.get(key, {}), Mapping):
            raise ValueError(f"{source}: {key} must be a table ([{key}]), got "
                             f"{type(doc[key]).__name__} {doc[key]!r:.60}")
    bad = {k: v for k, v in doc.get("variants", {}).items() if not isinstance(v, Mapping)}
    if bad:
        k = next(iter(bad))
        raise ValueError(f"{source}: variants.{k} must be a table ([variants.{k}]), got "
                         f"{type(bad[k]).__name__} {bad[k]!r:.60}")
    meta = dict(doc.get("experiment", {}))
    base = _unaliased(doc.get("base", {}), "base", source)
    axes = {k: _axis_values(k, v)
            for k, v in _unaliased(doc.get("grid", {}), "grid", source).items()}
    sweep = dict(doc.get("sweep", {}))
    check_sweep_options(sweep, source)
    name = str(meta.get("name") or Path(source).stem or "experiment")
    if name in (".", "..") or "/" in name or "\\" in name or not name.strip():
        raise ValueError(f"{source}: experiment name {name!r} must be a plain name, without "
                         "'/' or '\\' and not '.' or '..': it names the default output folder "
                         "runs/<name>")
    return Experiment(name=name, base=base, axes=axes, sweep=sweep,
                      variants={k: dict(v) for k, v in doc.get("variants", {}).items()},
                      description=str(meta.get("description", "")),
                      paper=str(meta.get("paper", "")), source=source)


def _clean(x: Any) -> Any:
    # Generated floats are rounded so that run ids do not hinge on the last ulp of linspace:
    # to 10 decimals, or 10 significant digits below 1e-3 (lr = 4e-11 must not become 0).
    if isinstance(x, (float, np.floating)):
        x = float(x)
        v = round(x, 10) if abs(x) >= 1e-3 else float(f"{x:.10g}")
        return 0.0 if v == 0 else v
    if isinstance(x, np.integer):
        return int(x)
    return x


def _axis_values(name: str, spec: Any) -> list[Any]:
    """Expand one axis spec (list, scalar or generator table) into a list of values."""
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in _GENERATORS:
        kind, args = next(iter(spec.items()))
        _check_generator(name, kind, args)
        return [_clean(v) for v in _GENERATORS[kind](*args)]
    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"axis {name!r} is empty")
        for v in spec:
            _check_fields_table(name, v)
        return [_clean(v) for v in spec]
    _check_fields_table(name, spec)
    return [_clean(spec)]


def _check_fields_table(name: str, value: Any) -> None:
    """A table as an axis value sets several config fields at once ({lr = 0.1, m = 4}); an
    empty one would set nothing, and a misspelt generator would pass for a field."""
    if not isinstance(value, dict):
        return
    gens = ", ".join(_GENERATORS)
    if not value:
        raise ValueError(f"axis {name!r}: an empty table sets nothing; give a value, a list "
                         f"of values or a generator table ({gens})")
    if len(value) == 1 and ALIASES.get(k := next(iter(value)), k) not in engine.config_fields():
        raise ValueError(f"axis {name!r}: {k!r} is neither a generator ({gens}) nor a config "
                         "field")


# Generator tables: {kind = [arguments]}; each must give 1 to MAX_AXIS_VALUES values.
_GENERATOR_ARGS = {"linspace": ("start", "stop", "count"),
                   "geomspace": ("start", "stop", "count"),
                   "arange": ("start", "stop", "step"),
                   "powers_of_2": ("first exponent", "last exponent"),
                   "logspace_int": ("start", "stop", "count")}
MAX_AXIS_VALUES = 100_000
MAX_GRID_CONFIGS = 1_000_000  # configs of one grid (each is a trained model)


def _check_generator(name: str, kind: str, args: Any) -> None:
    """Arguments of a generator table, with the axis, the generator and the numbers named."""
    names = _GENERATOR_ARGS[kind]
    where = f"axis {name!r}: {kind}"
    if not isinstance(args, list) or len(args) != len(names) or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
            for a in args):
        raise ValueError(f"{where} takes [{', '.join(names)}] (finite numbers), got {args!r}")
    whole = {"count": args[-1]} if names[-1] == "count" else {}
    if kind == "powers_of_2":
        whole = {"first exponent": args[0], "last exponent": args[1]}
    for what, v in whole.items():
        if v != int(v):
            raise ValueError(f"{where}: the {what} must be a whole number, got {v!r}")
    if kind == "arange":
        if args[2] <= 0:
            raise ValueError(f"{where}: step must be > 0, got {args[2]}")
        count = math.floor((args[1] - args[0]) / args[2] + 1e-9) + 1
    elif kind == "powers_of_2":
        if not 0 <= args[0] <= args[1] <= 62:
            raise ValueError(f"{where}: need 0 <= first exponent <= last exponent <= 62, got "
                             f"{args[0]} and {args[1]}")
        count = int(args[1]) - int(args[0]) + 1
    else:
        count = int(args[2])
    if kind == "geomspace" and not args[0] * args[1] > 0:
        raise ValueError(f"{where}: start and stop must be nonzero and of one sign, got "
                         f"{args[0]} and {args[1]}")
    if kind == "logspace_int" and not (args[0] > 0 and args[1] > 0):
        raise ValueError(f"{where}: start and stop must be > 0, got {args[0]} and {args[1]}")
    if not 1 <= count <= MAX_AXIS_VALUES:
        raise ValueError(f"{where} {args} gives {max(count, 0)} values; an axis needs 1 to "
                         f"{MAX_AXIS_VALUES}")


def _arange(start: float, stop: float, step: float) -> list[float]:
    count = int(math.floor((stop - start) / step + 1e-9)) + 1  # stop included
    return [start + k * step for k in range(count)]


_GENERATORS: dict[str, Callable[..., Sequence[Any]]] = {
    "linspace": lambda a, b, k: np.linspace(a, b, int(k)).tolist(),
    "geomspace": lambda a, b, k: np.geomspace(a, b, int(k)).tolist(),
    "arange": _arange,
    "powers_of_2": lambda lo, hi: [2 ** e for e in range(int(lo), int(hi) + 1)],
    # the paper's widths: floor(exp(linspace(log a, log b, k))) -> 10, 15, 25, 39, 63, 100
    "logspace_int": lambda a, b, k: [int(math.floor(math.exp(v) + 1e-9)) for v in
                                     np.linspace(math.log(a), math.log(b), int(k))],
}


_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.+:-]*")  # linear, tf32x3, cuda:0


def parse_value(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value`` as TOML; a bare word (``linear``,
    ``tf32x3``) is taken as a string, anything else that is not TOML is an error."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if _BARE_WORD.fullmatch(text):
            return text
        raise ValueError(f"--set value {text!r} is not a TOML value ({exc}); write e.g. "
                         "m=[8,16], gamma={linspace=[-1,1,5]}, dist=\"linear\", "
                         "save_weights=false") from None


def check_max_instances(value: Any, where: str = "") -> int:
    """``max_instances`` (models per launch): an integer >= 1, else a ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}max_instances must be an integer >= 1, got {value!r}")
    return value


def check_sweep_options(sweep: Mapping[str, Any], where: str) -> None:
    """Types of the ``[sweep]`` options, checked before any work."""
    from superkern.toy.api import GROUP_BY

    bad = sorted(set(sweep) - set(SWEEP_OPTIONS))
    if bad:
        raise ValueError(f"{where}: unknown [sweep] option(s) {bad}; known: {SWEEP_OPTIONS}")
    check_max_instances(sweep.get("max_instances", 1), f"{where}: ")
    if not isinstance(sweep.get("save_weights", True), bool):
        raise ValueError(f"{where}: save_weights must be true or false, got "
                         f"{sweep['save_weights']!r}")
    if not isinstance(sweep.get("device", ""), (str, type(None))):
        raise ValueError(f"{where}: device must be a string such as \"cuda:0\", got "
                         f"{sweep['device']!r}")
    if sweep.get("group_by") not in (None,) + GROUP_BY:
        raise ValueError(f"{where}: group_by must be one of {GROUP_BY}, got "
                         f"{sweep['group_by']!r}")


def apply_settings(exp: Experiment, settings: Mapping[str, Any], label: str) -> Experiment:
    """Apply flat overrides: an existing axis is replaced, a list or generator becomes an axis,
    a sweep option goes to ``[sweep]``, anything else sets a base field."""
    base, axes, sweep = dict(exp.base), dict(exp.axes), dict(exp.sweep)
    for raw_key, value in settings.items():
        key = ALIASES.get(raw_key, raw_key)
        if key in SWEEP_OPTIONS:
            sweep[key] = value
            continue
        is_axis = isinstance(value, list) or (
            isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _GENERATORS)
        if key == "dist" and isinstance(value, list) and all(
                isinstance(v, (int, float)) for v in value):
            is_axis = False  # an explicit frequency vector is one value, not an axis
            value = tuple(value)
        if key in axes or is_axis:
            axes[key] = _axis_values(key, value)
            base.pop(key, None)
        else:
            base[key] = _clean(value)
        # the new value overrides the same key set through a zipped axis of tables
        for axis, values in list(axes.items()):
            if axis != key and any(isinstance(v, dict) and key in v for v in values):
                axes[axis] = [{k: x for k, x in v.items() if k != key}
                              if isinstance(v, dict) else v for v in values]
    check_sweep_options(sweep, label)
    return replace(exp, base=base, axes=axes, sweep=sweep, applied=exp.applied + (label,))


def apply_variant(exp: Experiment, name: str) -> Experiment:
    """Apply the named ``[variants.NAME]`` table."""
    if name not in exp.variants:
        raise ValueError(f"experiment {exp.name!r} has no variant {name!r}; "
                         f"it has: {sorted(exp.variants) or 'none'}")
    return apply_settings(exp, exp.variants[name], f"variant:{name}")


def apply_overrides(exp: Experiment, items: Sequence[str]) -> Experiment:
    """Apply ``KEY=VALUE`` strings (values parsed as TOML)."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        settings[key.strip()] = parse_value(value.strip())
    return apply_settings(exp, settings, "set:" + ",".join(items)) if settings else exp


def expand(exp: Experiment) -> list[dict[str, Any]]:
    """The grid's config dicts, in cartesian-product order of the axes."""
    if exp.size() > MAX_GRID_CONFIGS:
        raise ValueError(f"{exp.name}: the grid expands to {exp.size()} configs ("
                         + " x ".join(f"{len(v)} {k}" for k, v in exp.axes.items())
                         + f"), more than {MAX_GRID_CONFIGS}; split it into several sweeps")
    names = list(exp.axes)
    fields = set(engine.config_fields())
    out = []
    for combo in itertools.product(*(exp.axes[k] for k in names)):
        cfg = copy.deepcopy(exp.base)
        set_by: dict[str, str] = {}
        for axis, value in zip(names, combo):
            items = value.items() if isinstance(value, dict) else [(axis, value)]
            for k, v in items:
                k = ALIASES.get(k, k)
                if k in set_by:
                    raise ValueError(f"axes {set_by[k]!r} and {axis!r} both set {k!r}")
                set_by[k] = axis
                cfg[k] = _clean(v)
        unknown = sorted(set(cfg) - fields)
        if unknown:
            raise ValueError(f"experiment {exp.name!r}: unknown field(s) {unknown}; "
                             f"config fields are {sorted(fields)}")
        out.append(cfg)
    return out


def build_configs(dicts: Sequence[Mapping[str, Any]],
                  make: Optional[Callable[[Mapping[str, Any]], Any]] = None) -> list[Any]:
    """Validate every config dict (all of them, before any work) and return the configs.

    Raises:
        ValueError: each distinct reason (up to 10) with the first config it rejects and
            the number of others.
    """
    make = make or engine.make_config
    configs: list[Any] = []
    reasons: dict[str, list[str]] = {}  # reason -> the configs it rejects (one line each)
    for i, d in enumerate(dicts):
        if not isinstance(d, Mapping):
            reasons.setdefault(f"a {type(d).__name__}, not a dict of config fields",
                               []).append(f"config {i + 1}/{len(dicts)}")
            continue
        try:
            configs.append(make(d))
        except ValueError as exc:
            reasons.setdefault(str(exc), []).append(f"config {i + 1}/{len(dicts)} {dict(d)}")
    if reasons:
        # one line per distinct reason, with its first config: a bad --set value repeats the
        # same reason for every config of the grid
        lines = [f"  {where[0]}: {why}" + (f" (and {len(where) - 1} more config(s))"
                                           if len(where) > 1 else "")
                 for why, where in reasons.items()]
        more = f"\n  ... and {len(lines) - 10} more reasons" if len(lines) > 10 else ""
        bad = sum(len(w) for w in reasons.values())
        raise ValueError(f"{bad} of {len(dicts)} configs are invalid:\n"
                         + "\n".join(lines[:10]) + more)
    return configs


def _sortable(v: Any) -> tuple:
    if v is None:
        return (0, 0.0, "")
    if isinstance(v, (int, float)):
        return (1, float(v), "")
    return (2, 0.0, str(v))


def group_configs(configs: Sequence[Any], *, max_instances: int = 32,
                  device: Optional[str] = None) -> list[Launch]:
    """Split configs into launches: same ``LAUNCH_KEY`` fields (and device), at most
    ``max_instances`` configs each, equal feature frequencies adjacent."""
    check_max_instances(max_instances)
    groups: dict[tuple, list[Any]] = {}
    for c in configs:
        d = engine.config_to_dict(c)
        key = tuple(d.get(k) if not isinstance(d.get(k), list) else tuple(d[k])
                    for k in LAUNCH_KEY) + (device,)
        groups.setdefault(key, []).append((d, c))
    launches = []
    for key, members in groups.items():
        members.sort(key=lambda dc: tuple(_sortable(dc[0].get(k)) for k in _SORT_KEY))
        for start in range(0, len(members), max_instances):
            chunk = tuple(c for _, c in members[start:start + max_instances])
            launches.append(Launch(key=key, configs=chunk))
    return launches

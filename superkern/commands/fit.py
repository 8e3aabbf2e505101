"""``superkern fit``: scaling exponents from sweep results, Zipf exponents of counts, and the
LLM width law (thin shims over :mod:`superkern.analysis`)."""
from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from superkern.commands import add_loss_option, path_arg, show_then_save


def register(sub) -> None:
    p = sub.add_parser(
        "fit", help="fit alpha_m (results), a Zipf exponent (zipf FILE), the width law "
                    "(width-law CSV) or the size-width law (size-width [CSV])",
        description="superkern fit RESULTS: alpha_m per cell, unlearned-feature loss, phi "
                    "tables.  superkern fit zipf FILE: Zipf exponent (pinned recipe) of a counts "
                    "file, a {token: count} JSON, or a text file.  superkern fit width-law CSV: "
                    "L = C/m^alpha + L_g from (family, dataset, m, loss) rows.  superkern fit "
                    "size-width [CSV]: N = a_family m^k from (family, m, params) rows (default: "
                    "the paper's 27 open models; --params picks nominal, exact or non-embedding "
                    "counts) and alpha_m = k alpha_N.")
    p.add_argument("target", type=path_arg,
                   help="a sweep folder (all its results files) or one results file, 'zipf', "
                        "'width-law' or 'size-width'")
    p.add_argument("file", type=path_arg, nargs="?",
                   help="the counts/text file (zipf) or CSV (width-law, size-width)")
    p.add_argument("--range", dest="fit_range", default="paper",
                   help="alpha_m fit range: paper (default), all, m>=32, m<=128, 16<=m<=128, "
                        "last5, first5, from3")
    add_loss_option(p)
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples over seeds (default 1000)")
    p.add_argument("--mode", default="auto", choices=("auto", "counts", "text", "json"),
                   help="zipf input format (default: detect)")
    p.add_argument("--points", type=int, default=1000, help="zipf: log-rank points (1000)")
    p.add_argument("--tokenizer", type=path_arg, metavar="SPEC",
                   help="zipf: tokenise the text file with this tokenizer (a tokenizer.json, a "
                        "folder holding one, 'minilm', a .gguf file, 'smollm2' or "
                        "'gemma3-270m') and fit the token counts")
    p.add_argument("--save-counts", type=path_arg, metavar="FILE",
                   help="zipf --tokenizer: also write the per-token-id counts as JSON (input of "
                        "'superkern probe --token-counts')")
    p.add_argument("--json", type=path_arg, metavar="FILE",
                   help="also write the result as JSON ('-': stdout)")
    p.add_argument("--alpha-n", type=float, nargs=2, metavar=("VALUE", "SE"),
                   default=(0.35, 0.02),
                   help="size-width: loss exponent in parameters, L ~ N^-alpha_N, with its "
                        "standard error (default 0.35 0.02, as the paper uses)")
    p.add_argument("--params", default="nominal", choices=("nominal", "exact", "non-embedding"),
                   help="size-width: which parameter count N is: the size in the model's name "
                        "(column params, default), every stored parameter (params_exact) or "
                        "the count without token/position embeddings and untied unembedding "
                        "(params_non_embedding)")
    p.add_argument("--plot", type=path_arg, metavar="PNG",
                   help="zipf: rank-frequency with the fitted line (paper Fig. 22); width-law: "
                        "loss against 1/m and L - L_g against m with the fit (Figs. 21, 8b); "
                        "size-width: N against m (Fig. 23)")
    p.add_argument("--against", type=path_arg, metavar="RESULTS",
                   help="compare alpha_m cell by cell with a second run of the same grid (e.g. "
                        "fp32 against tf32x3); exit 1 if any cell differs")
    p.add_argument("--z-max", type=float, default=2.0,
                   help="--against: largest |z| of B - A counted as agreement (default 2)")
    p.add_argument("--tol", type=float, default=0.05,
                   help="--against: largest |B - A| counted as agreement (default 0.05)")
    p.add_argument("--allow-partial", action="store_true",
                   help="--against: exit 0 even if some cells could not be compared")
    p.set_defaults(func=run)


def _emit(obj, path) -> None:
    """Strict JSON (a NaN or inf becomes null) to stdout ('-') or a file."""
    from superkern.analysis.scaling import _jsonable
    from superkern.sweep.store import atomic_write_text

    text = json.dumps(_jsonable(obj), indent=2, default=str, allow_nan=False)
    if path == "-":
        print(text)
    elif path:
        atomic_write_text(path, text + "\n")


def _output(args, text, obj, plot=None) -> None:
    """The table (``text``, or with ``--json -`` the JSON) on stdout, then ``--json FILE`` and
    ``--plot`` (``plot()`` gives the PNG); written even when stdout fails
    (:func:`show_then_save`)."""
    def show() -> None:
        if args.json == "-":
            _emit(obj, "-")
        elif text:
            print(text)

    def save() -> None:
        if args.json and args.json != "-":
            _emit(obj, args.json)
        if plot is not None and getattr(args, "plot", None):
            _save_png(args.plot, plot())

    show_then_save(show, save)


LLM_TARGETS = ("zipf", "width-law", "width", "size-width")


def _size_width(args) -> int:
    import dataclasses

    from superkern.analysis.llm_size import (BUILTIN, PARAM_COLUMNS, fit_size_width,
                                             load_size_csv)

    a_n, a_se = args.alpha_n
    if not (math.isfinite(a_n) and math.isfinite(a_se) and a_se >= 0):
        raise ValueError(f"--alpha-n needs a finite exponent and a finite standard error >= 0, "
                         f"got {a_n} {a_se}")
    source = args.file or BUILTIN
    fams, m, params = load_size_csv(source, args.params)
    f = fit_size_width(fams, m, params)
    am, se_q, se_lin = f.alpha_m(a_n, a_se)
    label = Path(source).name
    if not args.file:
        label += f" (built in: {args.params} sizes)"
    elif args.params != "nominal":
        label += f", column {PARAM_COLUMNS[args.params]}"
    lines = [f"N = a_family m^k over {f.n_points} models in {f.families} families ({label})",
             f"k = {f.k:.3f} +- {f.k_se:.3f}   R^2 (within families) {f.r2:.3f}"
             + ("   (paper, on these 27 models: 2.51; Chinchilla 2.52 +- 0.03)"
                if not args.file else ""),
             f"alpha_m = k alpha_N = {f.k:.3f} x {a_n:g} = {am:.3f} +- {se_q:.3f} "
             f"(errors in quadrature; +- {se_lin:.3f} added linearly)"]
    lines += [f"  a_{fam:<12} {a:.4g}" for fam, a in f.coefficients.items()]

    def plot() -> bytes:
        from superkern.analysis.fig_llm import png, size_width_figure

        ylabel = "parameters N" + (f" ({args.params})" if args.params != "nominal" else "")
        return png(size_width_figure(fams, m, params, f, ylabel=ylabel))

    _output(args, "\n".join(lines),
            {"file": str(source), "params": args.params, **dataclasses.asdict(f),
             "alpha_n": a_n, "alpha_n_se": a_se,
             "alpha_m": am, "alpha_m_se": se_q, "alpha_m_se_linear": se_lin}, plot)
    return 0


def _save_png(path: str, data: bytes) -> None:
    from superkern.sweep.store import atomic_write_bytes

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    print(f"wrote {path}", file=sys.stderr)


def _token_counts(args):
    """Per-token-id counts of the text file under ``--tokenizer``, and the tokenizer's name."""
    from superkern.analysis.tokens import corpus_counts

    if args.mode not in ("auto", "text"):
        raise ValueError(f"--tokenizer tokenises a text file; it does not apply to --mode "
                         f"{args.mode}")
    return corpus_counts(args.file, args.tokenizer)


def _check_options(args) -> None:
    """Options that do not fit the target, and output paths, refused before any work."""
    from superkern._atomic import check_targets

    # output paths before any work: a folder, an unwritable place or one file given twice
    check_targets(None if args.json == "-" else args.json, args.plot, args.save_counts)
    if args.against and args.target in LLM_TARGETS:
        raise ValueError(f"--against compares two sweep results; it does not apply to "
                         f"'fit {args.target}'")
    if args.target != "zipf" and (args.tokenizer or args.save_counts):
        raise ValueError(f"--tokenizer and --save-counts apply to 'fit zipf', not "
                         f"'fit {args.target}'")
    if args.plot and args.target not in LLM_TARGETS:
        raise ValueError("--plot applies to 'fit zipf', 'fit width-law' and 'fit size-width'; "
                         "sweep results are drawn by 'superkern figures'")
    if args.params != "nominal" and args.target != "size-width":
        raise ValueError(f"--params picks the parameter count 'fit size-width' fits; it does "
                         f"not apply to 'fit {args.target}'")
    if args.fit_range != "paper" and args.target in LLM_TARGETS:
        raise ValueError(f"--range picks the widths of an alpha_m fit of sweep results; it "
                         f"does not apply to 'fit {args.target}'")
    if args.file and args.target not in LLM_TARGETS and not Path(args.target).exists():
        import difflib

        near = difflib.get_close_matches(args.target, sorted(LLM_TARGETS), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ValueError(f"'{args.target}' is neither a results folder or file nor one of "
                         f"{', '.join(sorted(LLM_TARGETS))} (the forms that take FILE){hint}")


def run(args) -> int:
    _check_options(args)
    if args.target == "size-width":
        return _size_width(args)
    if args.target in ("zipf", "width-law", "width") and not args.file:
        print(f"superkern fit {args.target}: a file argument is required", file=sys.stderr)
        return 2
    if args.target == "zipf":
        return _zipf(args)
    if args.target in ("width-law", "width"):
        return _width_law(args)
    return _sweep_results(args)


def _zipf(args) -> int:
    import dataclasses

    from superkern.analysis.zipf import load_counts, zipf_fit

    name = None
    if args.tokenizer:
        counts, name = _token_counts(args)
        mode = f"text, {name} tokens"
    elif args.save_counts:
        raise ValueError("--save-counts writes per-token-id counts: it needs --tokenizer")
    else:
        counts, mode = load_counts(args.file, args.mode)
    z = zipf_fit(counts, points=args.points)
    c = np.asarray(counts, dtype=np.float64)
    frequencies = not np.all(c == np.rint(c))  # relative frequencies, not counts
    if name is not None and args.save_counts:  # only counts that could be fitted
        from superkern.analysis.tokens import save_token_counts

        save_token_counts(args.save_counts, counts, name, Path(args.file).name)
        print(f"wrote {args.save_counts}", file=sys.stderr)  # as --plot says of its PNG
    total = (f"{z.n_tokens} tokens" if not frequencies
             else f"total weight {c.sum():.4g} (frequencies, not counts)")
    text = (f"{args.file} ({mode}): alpha = {z.alpha:.4f} (slope se {z.stderr:.4f}), "
            f"R^2 = {z.r2:.4f}, {z.n_types} types, {total}, "
            f"{z.points} log-rank points"
            + (f" ({z.distinct_ranks} distinct: the se counts repeats)"
               if z.distinct_ranks < 100 else ""))
    result = {"file": args.file, "mode": mode, **dataclasses.asdict(z),
              "frequencies": bool(frequencies)}
    if frequencies:
        result.update(n_tokens=None, total_weight=float(c.sum()))

    def plot() -> bytes:
        from superkern.analysis.fig_llm import png, zipf_figure

        label = Path(args.file).name + (f", {name} tokens" if name else "")
        return png(zipf_figure(counts, z, label))

    _output(args, text, result, plot)
    return 0


def _width_law(args) -> int:
    import dataclasses

    from superkern.analysis.fits import fit_width_law
    from superkern.analysis.tables import load_width_csv

    groups, m, loss = load_width_csv(args.file)
    f = fit_width_law(groups, m, loss)
    lines = [f"L = C / m^alpha_m + L_g over {f.n_points} points, {f.n_params} parameters "
             f"(rmse {f.rmse:.4g})",
             f"alpha_m = {f.alpha_m:.4f} +- {f.alpha_m_se:.4f}   C = {f.c:.4g} +- "
             f"{f.c_se:.3g}   (paper, LLMs: alpha_m = 0.91 +- 0.04)"]
    lines += [f"  L_g {'/'.join(g):<30} {v:.4f} +- {se:.4f}" for g, (v, se) in f.offsets.items()]
    d = dataclasses.asdict(f)
    d["offsets"] = {"/".join(k): v for k, v in f.offsets.items()}

    def plot() -> bytes:
        from superkern.analysis.fig_llm import png, width_law_figure

        return png(width_law_figure(groups, m, loss, f))

    _output(args, "\n".join(lines), d, plot)
    return 0


def _sweep_results(args) -> int:
    """alpha_m per cell and the other tables of a sweep's results, or --against a second."""
    import dataclasses

    from superkern.analysis.fits import check_range_name
    from superkern.analysis.scaling import fit_report, format_report
    from superkern.analysis.tables import load_results

    check_range_name(args.fit_range)  # a bad range name fails before any work
    if args.bootstrap < 0:
        raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.against:
        from superkern.analysis.compare import compare_runs, format_comparison
        from superkern.analysis.scaling import _jsonable

        from superkern.analysis.scaling import untrained_note, untrained_runs

        ra, rb = load_results(args.target, args.loss), load_results(args.against, args.loss)
        rows, skipped = compare_runs(ra, rb, args.fit_range, z_max=args.z_max, tol=args.tol)
        ok = bool(rows) and all(r.agree for r in rows) and (args.allow_partial or not skipped)
        _output(args, format_comparison(rows, skipped, a=ra.caption(), b=rb.caption(),
                                        z_max=args.z_max, tol=args.tol),
                _jsonable({"a": ra.caption(), "b": rb.caption(), "z_max": args.z_max,
                           "tol": args.tol, "agree": ok,
                           "cells": [dataclasses.asdict(r) for r in rows],
                           "not_compared": skipped}))
        for side, res in (("first", ra), ("second", rb)):  # as the plain fit warns
            bad = untrained_runs(res)
            if bad:
                warnings.warn(untrained_note(len(bad), len(res.runs), f" of the {side} results"))
        return 0 if ok else 1
    res = load_results(args.target, args.loss)
    if not res.runs:
        why = ", malformed or without a test loss" if args.loss == "test" else " or malformed"
        raise ValueError(f"{args.target}: no usable runs ({res.skipped} row(s) left out: "
                         f"diverged, duplicated{why})")
    rep = fit_report(res, args.fit_range, n_boot=args.bootstrap)
    _output(args, format_report(rep), rep.to_dict())
    return 0

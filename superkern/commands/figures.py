"""``superkern figures RESULTS``: the paper's toy-model figures as PNGs (thin shim over
:func:`superkern.analysis.figures.make_figures`)."""
from __future__ import annotations

import sys

from superkern.commands import add_loss_option, path_arg


def register(sub) -> None:
    p = sub.add_parser(
        "figures", help="PNGs mirroring the paper's toy-model figures from sweep results",
        description="Plot what a sweep's results support (Figs. 1, 3, 4a, 4b, 5a, 5b, 6a-e, 7, "
                    "9-18, and freq_overlaps: mean c^2 by frequency rank); figures whose data "
                    "are absent are skipped with the reason.")
    p.add_argument("results", type=path_arg, nargs="?",
                   help="a sweep folder (all its results files) or one results file")
    p.add_argument("--out", type=path_arg, default=None,
                   help="output folder (default <results folder>/figures)")
    p.add_argument("--only", action="append", metavar="NAME", help="make only these (repeatable)")
    p.add_argument("--range", dest="fit_range", default="paper", help="alpha_m fit range")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (200)")
    add_loss_option(p)
    p.add_argument("--no-weights", action="store_true",
                   help="skip figures that read saved weights (5b falls back; 6a, 6b, 9, 11, "
                        "12, 15, 16 and freq_overlaps skip)")
    p.add_argument("--dpi", type=int, default=130)
    p.add_argument("--list", action="store_true", help="list the figures")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from superkern.analysis.figures import available_figures, default_figures_dir, make_figures

    if args.list or not args.results:
        figures = available_figures()
        width = max(map(len, figures))
        for name, title in figures.items():
            print(f"{name:<{width}}  {title}")
        return 0 if args.list else 2
    res = Path(args.results)
    out = args.out or default_figures_dir(res, args.loss)
    from superkern._atomic import check_target
    check_target(out, is_dir=True, option="--out")  # before any figure is drawn
    report = make_figures(res, out, only=args.only, fit_range=args.fit_range,
                          n_boot=args.bootstrap, use_weights=not args.no_weights, dpi=args.dpi,
                          loss=args.loss)
    print(report.text())
    if not report.written:
        print(f"no figure written: every figure was skipped ({len(report.skipped)}); the reasons "
              "are above", file=sys.stderr)
    return 0 if report.written else 1

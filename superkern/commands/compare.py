"""``superkern compare PATH...``: one table and two figures for many LM heads (thin shim over
:func:`superkern.compare`)."""
from __future__ import annotations

import sys

from superkern.commands import path_arg
from superkern.commands.probe import _sample, add_compute_options


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="compare the superposition geometry of several LM heads",
        description="Probe several heads; print one table; optionally write CSV/JSON and the "
                    "figures mean_sq_vs_m.png (mean c^2 vs m with 1/m) and row_norms.png.")
    p.add_argument("paths", type=path_arg, nargs="+",
                   help="checkpoint files/folders, aliases or Hugging Face Hub repo ids")
    add_compute_options(p)
    p.add_argument("--names", help="comma-separated display names, one per path")
    p.add_argument("--sample", type=_sample, default=None, metavar="N|auto",
                   help="row cap of every overlap pass (auto: 8192 on CPU, 4096 with the "
                        "torch backend, none on CUDA)")
    p.add_argument("--exact", action="store_true", help="no sampling anywhere")
    p.add_argument("--csv", type=path_arg, metavar="FILE", help="write the table as CSV")
    p.add_argument("--json", type=path_arg, metavar="FILE",
                   help="write the table and full reports as JSON ('-': to stdout, instead of "
                        "the table)")
    p.add_argument("--plots", type=path_arg, metavar="DIR", help="write the figures here")
    p.add_argument("--corpus", type=path_arg, metavar="FILE",
                   help="count a text file's tokens with each head's own tokenizer and add row "
                        "norm vs token frequency (and frequency_overlaps.png)")
    p.set_defaults(func=run)


def run(args) -> int:
    from superkern.probe.comparison import Comparison, compare
    from superkern.probe.outputs import check_targets

    to_stdout = args.json == "-"  # the JSON on stdout instead of the table
    json_path = None if to_stdout else args.json
    check_targets(args.csv, json_path, plots_dir=args.plots,
                  plot_names=Comparison.plot_names(bool(args.corpus)))
    names = [s.strip() for s in args.names.split(",")] if args.names else None
    result = compare(args.paths, names=names, tensor=args.tensor, precision=args.precision,
                     backend=args.backend, device=args.device, sample=args.sample,
                     exact=args.exact, bins=args.bins, seed=args.seed,
                     progress=False if args.no_progress else None, corpus=args.corpus,
                     keep_going=True)
    # shown even if writing a file fails
    print(result.to_json() if to_stdout else result.format_table(), flush=True)
    written = result.save(csv_path=args.csv, json_path=json_path, plots_dir=args.plots)
    for path in written:
        print(f"wrote {path}", file=sys.stderr if to_stdout else sys.stdout)
    for f in result.failed:
        print(f"superkern compare: error: {f['head']}: {f['error']} (left out; the other "
              "heads are in the results)", file=sys.stderr)
    return 1 if result.failed else 0

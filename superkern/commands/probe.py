"""``superkern probe [PATH]``: superposition geometry of one LM head (thin shim over
:func:`superkern.probe`)."""
from __future__ import annotations

import argparse
import sys

from superkern.commands import path_arg, show_then_save


def add_compute_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``probe`` and ``compare``."""
    p.add_argument("--tensor", help="tensor name to use instead of the automatic choice")
    p.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16", "fp16"),
                   help="dot-product precision of the overlap passes (default fp32)")
    p.add_argument("--backend", default="auto",
                   choices=("auto", "torch", "cpu", "triton", "cuda"),
                   help="overlap backend (default auto; env SUPERKERN_BACKEND overrides auto)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--bins", type=int, default=100, help="overlap histogram bins (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of row samples (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _sample(text: str):
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser(
        "probe", help="superposition geometry of an LM head (norms, overlaps, verdict)",
        description="Load an LM head (safetensors file/folder/sharded index, GGUF, .npy, "
                    ".pt/.bin, the aliases minilm / smollm2 / gemma3-270m, or a Hugging Face "
                    "Hub repo id ORG/NAME, fetching only the head) and report its "
                    "row norms, pairwise overlaps against random-vector baselines, and a "
                    "superposition verdict.")
    p.add_argument("path", type=path_arg, nargs="?", default="minilm",
                   help="checkpoint file or folder, an alias, or a Hugging Face Hub repo id "
                        "ORG/NAME[@REVISION][/FILE] (default: minilm)")
    add_compute_options(p)
    p.add_argument("--topk", type=int, default=10, help="most-overlapping pairs to list")
    p.add_argument("--exclude", action="append", metavar="ROWS",
                   help="rows to leave out, e.g. '0,5,10-19,100:200' (repeatable)")
    p.add_argument("--exclude-duplicates", action="store_true",
                   help="keep only the first of each group of exactly equal rows")
    p.add_argument("--sample", type=_sample, default=None, metavar="N|auto",
                   help="row cap of the centred/split overlap passes (auto: 8192 on CPU, 4096 "
                        "with the torch backend, none on CUDA; 0: exact everywhere). mean c^2 "
                        "is always exact")
    p.add_argument("--sample-main", action="store_true",
                   help="apply the --sample cap to the main pass too (for very large heads)")
    p.add_argument("--no-splits", action="store_true", help="skip the norm-split blocks")
    p.add_argument("--json", type=path_arg, metavar="FILE",
                   help="write the full report as JSON ('-': to stdout, instead of the table)")
    p.add_argument("--markdown", type=path_arg, metavar="FILE", help="write the report as Markdown")
    p.add_argument("--plots", type=path_arg, metavar="DIR",
                   help="write norms.png and overlaps.png here (and norm_vs_frequency.png with "
                        "--token-counts or --corpus)")
    p.add_argument("--token-counts", type=path_arg, metavar="FILE",
                   help="per-token-id counts ('superkern fit zipf CORPUS --tokenizer T "
                        "--save-counts FILE'): compare row norms with token frequency")
    p.add_argument("--corpus", type=path_arg, metavar="FILE",
                   help="a text file: count its tokens (with the head's own tokenizer unless "
                        "--tokenizer) and compare row norms with token frequency")
    p.add_argument("--tokenizer", type=path_arg, metavar="SPEC",
                   help="--corpus: a tokenizer.json, a folder holding one, 'minilm', a .gguf "
                        "file, 'smollm2', 'gemma3-270m' or a Hub repo id (default: the head's "
                        "own)")
    p.set_defaults(func=run)


def run(args) -> int:
    from superkern.probe.core import probe
    from superkern.probe.outputs import check_targets, plot_names

    to_stdout = args.json == "-"  # the JSON on stdout instead of the table
    json_path = None if to_stdout else args.json
    check_targets(json_path, args.markdown, plots_dir=args.plots,
                  plot_names=plot_names(bool(args.corpus or args.token_counts)))
    report = probe(args.path, tensor=args.tensor, precision=args.precision,
                   backend=args.backend, device=args.device, bins=args.bins, topk=args.topk,
                   exclude=args.exclude, exclude_duplicates=args.exclude_duplicates,
                   sample=args.sample, sample_main=args.sample_main,
                   splits=not args.no_splits, seed=args.seed, token_counts=args.token_counts,
                   corpus=args.corpus, tokenizer=args.tokenizer,
                   progress=False if args.no_progress else None)
    written = show_then_save(
        lambda: print(report.to_json() if to_stdout else report.format_table(), flush=True),
        lambda: report.save(json_path=json_path, markdown_path=args.markdown,
                            plots_dir=args.plots))
    for path in written:
        print(f"wrote {path}", file=sys.stderr if to_stdout else sys.stdout)
    return 0

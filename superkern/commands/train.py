"""``superkern train``: train one toy model or a small grid (comma lists for m, gamma, alpha)
with :func:`superkern.toy.train_many` and print a table."""
from __future__ import annotations

import itertools
import json
import os
import sys
from typing import Any

from superkern.commands import path_arg, show_then_save


def _values(s: str, kind: type, option: str) -> list[Any]:
    """A comma list for ``option``: every item parsed as ``kind``, at least one."""
    items = [v.strip() for v in s.split(",") if v.strip()]
    try:
        out = [kind(v) for v in items]
    except ValueError:
        raise ValueError(f"{option}: expected a comma list of {kind.__name__}s, "
                         f"got {s!r}") from None
    if not out:
        raise ValueError(f"{option}: no values in {s!r}")
    return out


def register(sub) -> None:
    p = sub.add_parser("train", help="train the paper's toy model y = ReLU(W W^T x + b)",
                       description="Train toy models (SPEC section 2). Comma lists for --m, "
                                   "--gamma and --alpha train the grid of all combinations at "
                                   "once. Unset fields come from --preset.")
    p.add_argument("--preset", default="small", choices=["small", "large", "none"],
                   help="hyper-parameters of unset fields (default: small, the paper's n = "
                   "1000, 20000 steps of batch 2048)")
    p.add_argument("--m", default="39", help="width(s), e.g. 10,15,25,39,63,100 (default: 39)")
    p.add_argument("--gamma", default="-1", help="weight decay(s); < 0 grows rows to norm 1 "
                   "(default: -1). Write negative lists with =, e.g. --gamma=-1,0.5")
    p.add_argument("--alpha", default=None, help="power-law exponent(s) (preset default)")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--dist", default="power", choices=["power", "exponential", "linear"])
    p.add_argument("--E", type=float, default=1.0, help="activation density sum_i p_i")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak lr of W (preset default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "triton"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "tf32x3", "bf16"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--test-batches", type=int, default=0, metavar="T",
                   help="also measure the final model's loss on T fresh batches (the paper: "
                        "100); adds a 'test' column")
    p.add_argument("--out", type=path_arg, default=None,
                   help="directory: W,b safetensors + results.jsonl")
    p.add_argument("--json", action="store_true", help="print one JSON line per model")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true",
                     help="show a progress bar on stderr (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def build_configs(args) -> list:
    from superkern.toy import ToyConfig

    if args.alpha is not None and args.dist != "power":
        raise ValueError(f"--alpha applies to --dist power only, not {args.dist}")
    alphas: list[Any] = [None] if args.alpha is None else _values(args.alpha, float, "--alpha")
    out = []
    for m, gamma, alpha in itertools.product(_values(args.m, int, "--m"),
                                             _values(args.gamma, float, "--gamma"), alphas):
        out.append(ToyConfig(
            n=args.n, m=m, gamma=gamma, dist=args.dist, alpha=alpha, E=args.E,
            steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
            preset=None if args.preset == "none" else args.preset,
            precision=args.precision, backend=args.backend, log_every=args.log_every,
            test_batches=args.test_batches))
    from superkern.sweep.runner import unique_configs

    return unique_configs(out)[0]  # "--m 8,8" trains one model


def _fmt(v: Any, spec: str) -> str:
    return format(float("nan") if v is None else float(v), spec)


def format_table(results) -> str:
    test = any(r.config.test_batches for r in results)
    head = (f"{'run_id':<16} {'n':>6} {'m':>5} {'gamma':>7} {'alpha':>6} {'loss':>10} "
            f"{'+-':>9} " + (f"{'test':>10} {'+-':>9} " if test else "") +
            f"{'phi_1/2':>7} {'phi_1':>6} {'cos2_str':>8} {'welch2':>8} "
            f"{'L_unlrn':>9} {'s':>7} {'backend':>7}")
    lines = [head]
    for r in results:
        c, g = r.config, r.geometry
        lines.append(
            f"{r.run_id:<16} {c.n:>6} {c.m:>5} {c.gamma:>7.3f} "
            f"{format(c.alpha, '>6.3f') if c.dist == 'power' else format('-', '>6')} "
            f"{_fmt(r.final_loss, '10.4g')} {_fmt(r.final_loss_std, '9.2g')} " +
            (f"{_fmt(r.test_loss, '10.4g')} {_fmt(r.test_loss_std, '9.2g')} " if test else "") +
            f"{_fmt(r.phi_half, '7.3f')} {_fmt(r.phi_1, '6.3f')} "
            f"{_fmt(g.get('mean_sq_strong'), '8.4f')} {_fmt(g.get('welch_kappa2_strong'), '8.4f')} "
            f"{_fmt(g.get('unlearned_loss'), '9.4g')} {r.seconds:>7.2f} {r.backend:>7}")
    lines += ["loss: per-sample loss, mean of the last 100 steps (+- its std); phi_1/2, phi_1: "
              "fraction of rows with norm > 1/2, > 1;",
              "cos2_str: mean cos^2 among rows of norm > 1; welch2: the Welch bound kappa^2 for "
              "that many rows in R^m; L_unlrn: the", "loss the unlearned features predict "
              "(weak superposition); s: training seconds"]
    return "\n".join(lines)


def run(args) -> int:
    from superkern._atomic import check_target
    from superkern.toy import train_many

    configs = build_configs(args)
    if args.out:  # before training: a path in the way must not cost the trained models
        check_target(args.out, is_dir=True, option="--out")
        check_target(os.path.join(args.out, "results.jsonl"), option="--out")
    show = args.progress or (not args.no_progress and sys.stderr.isatty())
    results = train_many(configs, device=args.device, progress=True if show else None)

    def table() -> None:
        if args.json:
            for r in results:
                print(json.dumps(r.to_dict(), allow_nan=False))
        else:
            print(format_table(results))
            bad = [r.run_id for r in results if r.diverged]
            if bad:
                print(f"{len(bad)} run(s) diverged (non-finite loss): {', '.join(bad)}")
        sys.stdout.flush()

    def save() -> None:
        if not args.out:
            return
        from superkern.sweep.store import ResultsStore

        store = ResultsStore(os.path.join(args.out, "results.jsonl"))
        store.repair()  # a partial last line left by a killed run: the new rows start clean
        for r in results:  # weights first (atomic), then one fsynced row that points at them
            store.append({**r.to_dict(), "weights": r.save(args.out).name})

    show_then_save(table, save)
    return 0

"""``probe``: load a head, then norms -> duplicates -> overlaps (all rows, centred, strong/weak
splits) -> baselines -> verdict. Data flows one way: path -> Head -> ops -> ProbeReport.

Cost: the tiled pass is O(N^2 m) (mean |c|, max, histogram, top-k); the Gram identities give
mean c and mean c^2 exactly in O(N m^2). The main pass always covers every analysed row; the
secondary passes (centred matrix, norm splits) run on a seeded sample of at most ``sample`` rows
while their mean c^2 stays exact over all rows.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

import superkern
from superkern import backend as _backend
from superkern.backend import resolve_device
from superkern.ops._checks import as_flag
from superkern.ops.norms import MAX_NORM_BINS, row_norm_stats
from superkern.ops.overlap_ref import PRECISIONS
from superkern.ops import overlap_stream as _stream
from superkern.ops.overlap_stream import free_device_bytes
from superkern.probe.frequency import (frequency_bins, frequency_stats, prepare_counts,
                                      seen_rows)
from superkern.probe.gguf_loader import drop_shared, shared_readers
from superkern.probe.gram import set_moments
from superkern.probe.loaders import load_head
from superkern.probe.progress import Stages
from superkern.probe.passes import OverlapPasses, RunOptions
from superkern.probe.report import ProbeReport
from superkern.probe.rowsel import as_index, duplicate_groups, parse_rows
from superkern.probe.verdict import superposition_verdict

# Rows per secondary tiled pass on a CPU (keeps the default run short): the compiled kernel
# does 8192 rows in about a second on 2 cores; plain torch is ~10x slower, so it gets fewer.
AUTO_SAMPLE_CPU = {"torch": 4096}
AUTO_SAMPLE_CPU_DEFAULT = 8192


def _check_int(value: Any, name: str, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def probe(source: Any = "minilm", *, tensor: Optional[str] = None, precision: str = "fp32",
          backend: str = "auto", device: str = "auto", bins: int = 100, norm_bins: int = 50,
          topk: int = 10, exclude: Any = None, exclude_duplicates: bool = False,
          rows: Any = None, sample: Optional[int] = None, sample_main: bool = False,
          centred: bool = True, splits: bool = True, seed: int = 0,
          progress: Optional[bool] = None, vocab: Optional[list[str]] = None,
          token_counts: Any = None, corpus: Any = None,
          tokenizer: Any = None) -> ProbeReport:
    """Superposition geometry of an LM head.

    Args:
        source: anything :func:`superkern.load_head` takes (path, folder, ``"minilm"``,
            ``"smollm2"``, tensor, module, Head).
        tensor: head tensor name override.
        precision: dot-product precision of the tiled passes (fp32, tf32, bf16, fp16).
        backend: overlap backend (auto, torch, cpu, triton, cuda).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        bins: overlap histogram bins over [-1, 1] (0 = none); norm_bins: row-norm histogram bins.
        topk: number of most-overlapping pairs to list (main pass).
        exclude: rows to leave out: indices, ``"0,5,10-19,100:200"`` (a-b inclusive, a:b
            half-open) or a list of those.
        exclude_duplicates: keep only the first row of each group of exactly equal rows
            (duplicates are always counted in the report either way).
        rows: analyse only these rows (mask, index list or range spec); for quick looks/tests.
        sample: row cap of the secondary tiled passes (centred, splits); None = auto (8192 on a
            CPU, 4096 with the plain torch backend, no cap on CUDA); 0 = never sample.
            mean c^2 is always exact over all rows.
        sample_main: apply the cap to the main pass too.
        centred, splits: compute the centred-matrix block / the norm-split blocks.
        seed: sample seed. progress: tqdm bar on stderr (None = only on a terminal).
        vocab: token strings to use instead of the checkpoint's.
        token_counts: per-token-id counts (a file written by ``superkern fit zipf --tokenizer
            ... --save-counts``, or an array) to compare row norms with token frequency
            (``report.frequency``; the paper's Fig. 6a for an LM head).
        corpus: a text file to count tokens in instead (tokenised before any other work).
        tokenizer: the corpus's tokenizer (see :func:`superkern.analysis.tokens.load_tokenizer`);
            default: the head's own (its alias, its GGUF file, or a tokenizer.json beside it).

    Returns:
        ProbeReport.

    Raises:
        ValueError / FileNotFoundError: bad input (see :func:`superkern.load_head`), bad
            options, non-finite values in the head.
    """
    t_start = time.perf_counter()
    bins, norm_bins = _check_int(bins, "bins"), _check_int(norm_bins, "norm_bins", 1)
    if norm_bins > MAX_NORM_BINS:
        raise ValueError(f"norm_bins={norm_bins} exceeds {MAX_NORM_BINS}")
    for flag, name in ((exclude_duplicates, "exclude_duplicates"), (sample_main, "sample_main"),
                       (centred, "centred"), (splits, "splits")):
        as_flag(flag, name)
    topk, seed = _check_int(topk, "topk"), _check_int(seed, "seed")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    dev = resolve_device(device)
    name = _backend.resolve(backend, torch.empty(0, device=dev))  # fail before any work
    if sample is None:
        cap = AUTO_SAMPLE_CPU.get(name, AUTO_SAMPLE_CPU_DEFAULT) if dev.type == "cpu" else 0
    else:
        cap = _check_int(sample, "sample")
    if 0 < cap < 2:
        raise ValueError(f"sample must be 0 (no sampling) or >= 2 rows, got {cap}")
    # a GGUF head and its own tokenizer come from one file: parse it once
    with shared_readers() if corpus is not None else contextlib.nullcontext():
        counts, counts_source = _load_counts(token_counts, corpus, tokenizer, source)
        timings: dict[str, float] = {}
        bar = Stages(progress)
        try:
            opts = RunOptions(device=dev, backend=name, precision=precision, bins=bins,
                              norm_bins=norm_bins, topk=topk, cap=cap, sample_main=sample_main,
                              centred=centred, splits=splits, seed=seed)
            report = _run(source, tensor, vocab, bar, timings, opts, exclude=exclude,
                          exclude_duplicates=exclude_duplicates, rows=rows, t_start=t_start,
                          counts=counts, counts_source=counts_source)
        finally:
            bar.close()
    return report


def _load_counts(token_counts: Any, corpus: Any, tokenizer: Any, source: Any
                 ) -> tuple[Optional[np.ndarray], str]:
    """Per-id counts and their label, from a counts file, an array or a corpus tokenised here
    (None: not asked for). Runs before the head is loaded, so bad input fails early."""
    counts, label = _read_counts(token_counts, corpus, tokenizer, source)
    if counts is not None and int((counts > 0).sum()) < 3:
        raise ValueError(f"{label}: only {int((counts > 0).sum())} token id(s) have a nonzero "
                         "count; a frequency comparison needs 3")
    return counts, label


def _read_counts(token_counts: Any, corpus: Any, tokenizer: Any, source: Any
                 ) -> tuple[Optional[np.ndarray], str]:
    if corpus is not None:
        if token_counts is not None:
            raise ValueError("pass token counts or a corpus, not both")
        from superkern.analysis.tokens import corpus_counts, head_tokenizer_spec

        if tokenizer is None:
            try:
                tokenizer = head_tokenizer_spec(source)
            except ValueError as exc:
                raise ValueError(f"{exc}; pass the tokenizer to count the corpus with "
                                 "(--tokenizer, or tokenizer=)") from None
        counts, name = corpus_counts(corpus, tokenizer)
        return counts, f"{name} tokens of {Path(corpus).name}"
    if tokenizer is not None:
        raise ValueError("a tokenizer is used only with a corpus")
    if token_counts is None:
        return None, ""
    if isinstance(token_counts, (str, os.PathLike)):
        from superkern.analysis.tokens import load_token_counts

        counts, meta = load_token_counts(token_counts)
        label = Path(token_counts).name
        if meta.get("tokenizer"):
            label += f", {meta['tokenizer']} tokens of {meta.get('source', '?')}"
        return counts, label
    if isinstance(token_counts, dict):
        raise ValueError("token_counts must be one count per token id (a list or array "
                         "indexed by id), not a dict; a {token: count} file can be passed by "
                         "path")
    try:
        counts = np.asarray(token_counts, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("token_counts must be one finite count >= 0 per token id") from None
    if counts.ndim != 1 or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"token_counts must be one finite count >= 0 per token id (got shape "
                         f"{counts.shape})")
    return counts, "token counts (array)"


def _timed(timings: dict[str, float], key: str, t0: float) -> None:
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def _run(source, tensor, vocab, bar: Stages, timings: dict[str, float], o: RunOptions, *,
         exclude, exclude_duplicates: bool, rows, t_start: float, counts=None,
         counts_source: str = "") -> ProbeReport:
    def timed(key: str, t0: float) -> None:
        _timed(timings, key, t0)

    t0 = time.perf_counter()
    with bar.stage("load"):
        head = load_head(source, tensor, vocab=vocab)
        drop_shared()  # parsed GGUF metadata is not needed through the tiled passes
    timed("load", t0)
    W = head.matrix
    n, m = head.n, head.m
    full = None if counts is None else prepare_counts(counts, n)  # before the O(n^2 m) work
    sel = as_index(rows, n)
    base = torch.arange(n, dtype=torch.int64) if sel is None else sel
    N = int(base.numel())
    S = min(o.cap, N) if o.cap else N
    # Relative stage costs (flops, with fp64 Gram work weighted x4) for the progress bar.
    bar.plan({"norms": 20.0 * n * m,
              "exact": 4.0 * (1 + o.centred + 2 * o.splits) * N * m * m,
              "frequency": 0.0 if full is None else 4.0 * (1 + o.centred) * N * m * m,
              "main": (S if o.sample_main else N) ** 2 * m, "centred": S * S * m / 2 * o.centred,
              "splits": S * S * m * o.splits})

    t0 = time.perf_counter()
    with bar.stage("norms"):
        dups = duplicate_groups(W)
        keep, keep_idx = _analysed_rows(n, base, exclude, exclude_duplicates, dups)
        norms, r = _row_norms(W, keep_idx, head, o.norm_bins, full)
    timed("norms_duplicates", t0)

    Wd = _place_head(W, o.device, centred=o.centred, precision=o.precision)
    kr = r[keep_idx]
    nz_idx = keep_idx[kr > 0]  # zero rows take part in no pairwise statistic, centred or not
    sets = _block_rows(keep_idx, kr, norms.median, o.splits)
    t0 = time.perf_counter()
    with bar.stage("exact"):
        exact = set_moments(Wd, {k: v[1] for k, v in sets.items()}, device=o.device)
        mean = Wc = rc = None
        if o.centred:
            mean = _stream.column_mean(Wd, nz_idx)
            exact["centred"] = set_moments(Wd, {"centred": nz_idx}, centre=mean,
                                           device=o.device)["centred"]
            Wc, shift = _stream.centred(Wd, mean)  # all n rows shifted; only nz_idx are read
            rc = torch.full((n,), math.nan, dtype=torch.float64)
            on = nz_idx.to(Wc.device)
            rc[nz_idx] = _stream.times_pow2(_stream.row_norms(Wc)[on], shift[on]).cpu()
    timed("exact", t0)
    frequency = None
    if full is not None:
        t0 = time.perf_counter()
        with bar.stage("frequency"):
            frequency = _frequency(Wd, r, rc, counts, counts_source, m, o.device, mean)
        timed("frequency", t0)

    passes = OverlapPasses(sets, exact, nz_idx, n, m, o, timed)
    with bar.stage("main"):
        passes.run("all", Wd, keep_idx, main=True)
    if o.centred:
        with bar.stage("centred"):
            passes.run("centred", Wc, nz_idx, main=False)
            del Wc
    if o.splits:
        with bar.stage("splits"):
            for key in list(sets)[1:]:
                passes.run(key, Wd, sets[key][1], main=False)

    blocks = passes.blocks
    main, cen = blocks["all"], blocks.get("centred")
    verdict = superposition_verdict(
        n=main.n_used, m=m, norms=norms, mean_sq=main.mean_sq,
        mean_sq_centred=cen.mean_sq if cen is not None and cen.n_used >= 2 else None)
    run_backend = main.stats.backend if main.stats is not None else o.backend
    run = {"backend": run_backend,
           "precision": o.precision, "device": str(o.device), "sample": o.cap,
           "sample_main": o.sample_main, "seed": o.seed, "threads": _threads(run_backend),
           "torch": torch.__version__, "superkern": superkern.__version__,
           "head_in_host_memory": Wd.device != o.device,
           "block_rows": main.stats.block_rows if main.stats is not None else 0,
           "timings": timings, "seconds": time.perf_counter() - t_start}
    in_base = torch.zeros(n, dtype=torch.bool)
    in_base[base] = True
    return ProbeReport(head=head, rows_analysed=int(keep_idx.numel()),
                       excluded=torch.nonzero(in_base & ~keep).flatten().tolist(),
                       duplicates=dups, duplicates_excluded=exclude_duplicates, norms=norms,
                       blocks=blocks, verdict=verdict, run=run,
                       rows_selected=None if sel is None else N, sample_rows=passes.samples,
                       row_norms=r, row_norms_centred=rc, frequency=frequency)


def _analysed_rows(n: int, base: torch.Tensor, exclude: Any, exclude_duplicates: bool,
                   dups: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep mask (n,), its indices): the selected rows less the excluded ones and, with
    ``exclude_duplicates``, all but the first analysed copy of each group of equal rows."""
    drop = parse_rows(exclude, n, "exclude")
    keep = torch.zeros(n, dtype=torch.bool)
    keep[base] = True
    keep[drop] = False
    if exclude_duplicates:  # keep the first copy that is still analysed
        for g in dups:
            kept = [i for i in g if keep[i]]
            keep[torch.tensor(kept[1:], dtype=torch.int64)] = False
    keep_idx = torch.nonzero(keep).flatten()
    if keep_idx.numel() == 0:
        raise ValueError(f"no rows left to analyse: n={n}, selected {int(base.numel())}, "
                         f"excluded {int(drop.numel())}")
    return keep, keep_idx


def _threads(backend: str) -> int:
    """CPU threads of the run: the cpu kernel's own count (1 without OpenMP or in a forked
    child), else torch's."""
    if backend == "cpu":
        from superkern.ops.overlap_cpu import cpu_threads

        return cpu_threads()
    return torch.get_num_threads()


def _row_norms(W: torch.Tensor, keep_idx: torch.Tensor, head, norm_bins: int,
               full: Optional[np.ndarray]):
    """(norm statistics of the analysed rows, fp64 norms (n,) with NaN for rows not
    analysed); fails on non-finite rows, too few counted rows, or fewer than 2 nonzero rows."""
    n = W.shape[0]
    Wk = W if keep_idx.numel() == n else W[keep_idx]
    _check_finite_rows(Wk, keep_idx, head)
    norms = row_norm_stats(Wk, bins=norm_bins)
    del Wk
    r = torch.full((n,), math.nan, dtype=torch.float64)
    r[keep_idx] = norms.norms
    if full is not None:
        seen_rows(r.numpy(), full)  # enough analysed rows with a count, or fail now
    if keep_idx.numel() - norms.n_zero < 2:
        raise ValueError(f"{head.source}: tensor {head.tensor!r}: only "
                         f"{keep_idx.numel() - norms.n_zero} nonzero row(s) among the "
                         f"{keep_idx.numel()} analysed ({norms.n_zero} are all zeros); "
                         "pairwise overlaps need at least 2")
    return norms, r


def _block_rows(keep_idx: torch.Tensor, kr: torch.Tensor, med: float, splits: bool
                ) -> dict[str, tuple[str, torch.Tensor]]:
    """key -> (title, rows) of the blocks on the raw head: all analysed rows, and with
    ``splits`` the paper's strong/weak split at norm 1 and the split at the median norm."""
    sets = {"all": ("all rows", keep_idx)}
    if splits:
        sets.update({
            "norm>1": ("strong: norm > 1", keep_idx[kr > 1.0]),
            "norm<=1": ("weak: norm <= 1", keep_idx[(kr > 0) & (kr <= 1.0)]),
            "norm>median": (f"norm > median ({med:.4g})", keep_idx[kr > med]),
            "norm<=median": ("norm <= median", keep_idx[(kr > 0) & (kr <= med)])})
    return sets


def _frequency(Wd, r, rc, counts, source, m, dev, centre, group: int = 4):
    """Row norm vs token frequency, with the exact mean c^2 inside each frequency-rank bin and
    among the unseen rows, raw and (with ``centre``) centred. Gram matrices are accumulated
    ``group`` sets at a time (each is m x m fp64)."""
    bins, unseen = frequency_bins(r.numpy(), counts)
    sets = {f"bin{k}": torch.from_numpy(ids) for k, ids in enumerate(bins)}
    if unseen.size:
        sets["unseen"] = torch.from_numpy(unseen)
    names = list(sets)
    raw: dict[str, dict] = {}
    cen: dict[str, dict] = {}
    for s in range(0, len(names), group):
        part = {k: sets[k] for k in names[s:s + group]}
        raw.update(set_moments(Wd, part, device=dev))
        if centre is not None:
            cen.update(set_moments(Wd, part, centre=centre, device=dev))

    def pick(key: str) -> dict[str, float]:
        return {"mean_sq": raw[key]["mean_sq"],
                "mean_sq_centred": cen[key]["mean_sq"] if key in cen else math.nan}

    return frequency_stats(r.numpy(), counts, source,
                           centred=None if rc is None else rc.numpy(), m=m,
                           overlaps=[pick(f"bin{k}") for k in range(len(bins))],
                           unseen_overlap=pick("unseen") if unseen.size else None)


_OPERAND_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2}


def _place_head(W: torch.Tensor, dev: torch.device, *, centred: bool = True,
                precision: str = "fp32", room: float = 0.8) -> torch.Tensor:
    """The head on the compute device when everything a probe puts there fits in ``room`` of
    the free memory: the head, its fp32 centred copy (when centred), and the kernel operand
    when the head's dtype is not the operand's. Otherwise the head stays in host memory and
    every pass moves it in row blocks (``overlap_stats(device=...)`` streams it; the centred
    copy is then made in host memory too)."""
    if dev.type != "cuda" or W.device == dev:
        return W.to(dev)
    return W.to(dev) if _fits_on_device(W, dev, centred=centred, precision=precision,
                                        room=room) else W


def _fits_on_device(W: torch.Tensor, dev: torch.device, *, centred: bool, precision: str,
                    room: float) -> bool:
    """Whether the head, its fp32 centred copy (when centred) and a kernel operand of another
    dtype than the head's fit in ``room`` of the device's free memory."""
    elems = W.numel()
    need = elems * W.element_size()
    if centred:
        need += elems * 4
    if W.element_size() != _OPERAND_BYTES[precision] or precision == "fp16":
        need += elems * _OPERAND_BYTES[precision]
    return need <= room * free_device_bytes(dev)


def _check_finite_rows(Wk: torch.Tensor, idx: torch.Tensor, head, chunk: int = 1 << 14) -> None:
    """NaN/Inf in the analysed rows ``Wk`` (= W[idx]) is an error naming the checkpoint and the
    row's index in the whole head."""
    bad_rows = []
    count = 0
    for s in range(0, Wk.shape[0], chunk):
        bad = ~torch.isfinite(Wk[s:s + chunk])
        if bool(bad.any()):
            count += int(bad.sum())
            bad_rows.append(s + torch.nonzero(bad.any(dim=1)).flatten().cpu())
    if count:
        rows = idx[torch.cat(bad_rows)].tolist()
        shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
        raise ValueError(f"{head.source}: tensor {head.tensor!r} has {count} non-finite "
                         f"value(s) (NaN or Inf) in {len(rows)} analysed row(s): {shown} "
                         f"(of {head.n}); exclude them (--exclude) or fix the checkpoint")

"""superkern inside a user's process: torch's process-wide fp32-matmul switch is set only
while superkern needs it, one thread at a time, and left exactly as the caller had it (the
legacy flags are never read, so a caller on torch's newer API gets no error); warnings
filters are left alone by concurrent calls."""
from __future__ import annotations

import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import superkern
from superkern import ToyConfig, train
from superkern._tf32 import _new_api, matmul_precision, tf32_enabled

new_api = pytest.mark.skipif(not _new_api(), reason="torch < 2.9 has only the legacy flag")
TINY = dict(n=40, m=5, steps=20, batch=16, preset=None, lr=1e-2, gamma=-1.0, alpha=1.0)


def _props():
    b = torch.backends
    return (b.fp32_precision, b.cuda.matmul.fp32_precision, b.mkldnn.fp32_precision,
            b.mkldnn.matmul.fp32_precision, b.cudnn.fp32_precision)


def _get_precision():
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:  # torch refuses to report a legacy/new mix
        return "refused"


@pytest.fixture
def restore_precision():
    """The legacy setting first (it writes the new properties), then every property back to
    'none': resetting only the properties left torch reporting a stale 'medium' and raising
    on allow_tf32 for the rest of the session."""
    saved = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(saved)
    b = torch.backends
    for obj in (b.cuda.matmul, b.mkldnn.matmul, b.mkldnn, b.cudnn, b):
        obj.fp32_precision = "none"


def _user(setup: str) -> None:
    b = torch.backends
    if setup in ("medium", "high"):
        torch.set_float32_matmul_precision(setup)
    elif setup == "cuda tf32":
        b.cuda.matmul.fp32_precision = "tf32"
    elif setup.startswith("global tf32"):
        b.fp32_precision = "tf32"
        if setup.endswith("cuda ieee"):
            b.cuda.matmul.fp32_precision = "ieee"
    elif setup == "cudnn ieee, cuda tf32":  # cuBLAS's parent is torch's "cuda" setting
        b.fp32_precision = "tf32"
        b.cudnn.fp32_precision = "ieee"
        b.cuda.matmul.fp32_precision = "tf32"
    elif setup == "legacy mix":  # the new API, then the legacy flag the other way
        torch.set_float32_matmul_precision("high")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b.cuda.matmul.allow_tf32 = False


@new_api
@pytest.mark.parametrize("setup", ["default", "medium", "high", "cuda tf32", "global tf32",
                                   "global tf32, cuda ieee", "cudnn ieee, cuda tf32",
                                   "legacy mix"])
def test_the_switch_is_exact_inside_and_the_callers_after(setup, restore_precision):
    """The old context read and wrote only the legacy allow_tf32 flags: on a caller's
    `fp32_precision` it raised, it left cuBLAS at 'ieee' instead of 'none' (no longer following
    the global setting), and after `set_float32_matmul_precision` torch refused to report the
    precision. Inside: tf32 as asked for cuBLAS, IEEE for CPU matmuls ('medium' makes them
    bf16). After: every property as before, still following its parent where it did."""
    _user(setup)
    before, reported = _props(), _get_precision()
    effective = torch.backends.cuda.matmul.fp32_precision
    for prec in ("fp32", "tf32", "fp32"):
        with matmul_precision(prec):
            assert tf32_enabled() is (prec == "tf32")
            assert torch.backends.mkldnn.matmul.fp32_precision in ("ieee", "none")
        assert _props() == before and _get_precision() == reported, prec
        assert torch.backends.cuda.matmul.fp32_precision == effective, prec
    follows = torch.backends.cuda.matmul.fp32_precision != "ieee" or setup == "default"
    torch.backends.fp32_precision = "tf32"  # a later global change reaches cuBLAS as before
    assert (torch.backends.cuda.matmul.fp32_precision == "tf32") is (
        follows and not setup.endswith("cuda ieee")), setup


@new_api
def test_public_calls_under_the_new_api_and_medium(restore_precision):
    """torch.backends.cuda.matmul.fp32_precision = "tf32" made overlap_stats(backend="torch")
    and train() raise (reading the legacy flag); under 'medium' the fp32 reference ran its
    CPU products in bf16 and changed in the 7th digit."""
    W = torch.randn(300, 24, generator=torch.Generator().manual_seed(1))
    kw = dict(backend="torch", bins=32, topk=4, per_row=True)
    ref = superkern.overlap_stats(W, **kw)
    ref_toy = train(ToyConfig(**TINY), device="cpu")
    for setup in ("cuda tf32", "medium"):
        _user(setup)
        before, reported = _props(), _get_precision()
        st = superkern.overlap_stats(W, **kw)
        r = train(ToyConfig(**TINY), device="cpu")
        assert _props() == before and _get_precision() == reported
        assert st.mean_sq == ref.mean_sq and st.max_abs == ref.max_abs
        assert torch.equal(st.row_sum_sq, ref.row_sum_sq) and torch.equal(st.hist, ref.hist)
        assert torch.equal(r.W, ref_toy.W) and r.final_loss == ref_toy.final_loss


def test_threads_take_turns_with_the_switch():
    """The old context saved and restored without a lock: a tf32 section and an fp32 one in
    two threads saw each other's setting, and whichever ended last restored a stale value
    for the rest of the process. Now the second waits for the first."""
    before = tf32_enabled()
    entered, release, seen = threading.Event(), threading.Event(), {}

    def holder():
        with matmul_precision("tf32"):
            entered.set()
            release.wait(30)

    def other():
        with matmul_precision("fp32"):
            seen["tf32 inside"] = tf32_enabled()

    t1 = threading.Thread(target=holder)
    t1.start()
    assert entered.wait(30)
    t2 = threading.Thread(target=other)
    t2.start()
    t2.join(0.3)
    assert t2.is_alive() and not seen  # waiting for the tf32 section to end
    release.set()
    t1.join(30)
    t2.join(30)
    assert seen == {"tf32 inside": False} and tf32_enabled() is before
    with matmul_precision("tf32"), matmul_precision("fp32"):  # re-entrant in one thread
        assert not tf32_enabled()


def test_concurrent_calls_match_calls_alone_and_leave_the_process_as_it_was():
    W = torch.randn(200, 16, generator=torch.Generator().manual_seed(2))
    jobs = [("stats", prec) for prec in ("fp32", "tf32", "bf16")] + \
        [("train", prec) for prec in ("fp32", "tf32")]

    def run(job):
        kind, prec = job
        if kind == "stats":
            st = superkern.overlap_stats(W, backend="torch", precision=prec, bins=16)
            return st.mean_sq, st.hist.tolist()
        r = train(ToyConfig(**{**TINY, "precision": prec}), device="cpu")
        return r.final_loss, r.W.flatten().tolist()

    alone = [run(j) for j in jobs]
    state = (tf32_enabled(), _get_precision())
    with ThreadPoolExecutor(4) as ex:
        together = list(ex.map(run, jobs * 3))
    assert together == alone * 3
    assert (tf32_enabled(), _get_precision()) == state


def test_concurrent_reads_of_read_only_arrays_leave_the_warnings_filters_alone():
    """Each read of a read-only numpy array swapped the process-wide warnings filters: two
    threads interleaving left an 'ignore everything' filter behind for good (seen in 2 runs
    of 2 with 6 threads)."""
    ro = np.random.default_rng(0).standard_normal((6, 3))
    ro.setflags(write=False)
    before, interval = list(warnings.filters), sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: the old code failed 2 runs in 3
    try:
        for _ in range(3):
            with ThreadPoolExecutor(6) as ex:
                got = set(ex.map(lambda i: superkern.overlap_stats(ro).mean_sq, range(2400)))
            assert len(got) == 1 and warnings.filters == before
    finally:
        sys.setswitchinterval(interval)


FORK_IN_SECTION = """
import multiprocessing as mp, sys, threading, torch, superkern
from superkern._tf32 import matmul_precision, tf32_enabled
inside, release = threading.Event(), threading.Event()

def hold():
    with matmul_precision("tf32"):
        inside.set()
        release.wait(60)

def child(q):
    st = superkern.overlap_stats(torch.randn(50, 8), backend="torch")
    q.put((st.n_used, tf32_enabled()))

t = threading.Thread(target=hold)
t.start()
inside.wait(60)
ctx = mp.get_context("fork")
q = ctx.Queue()
p = ctx.Process(target=child, args=(q,))
p.start()
p.join(60)
release.set()
t.join(60)
if p.is_alive():
    p.kill()
    sys.exit("the forked child hung")
print(q.get(timeout=5), tf32_enabled())
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "register_at_fork"), reason="no fork")
def test_a_child_forked_during_a_section_is_free_of_it():
    """A child forked while another thread was inside a tf32 section inherited the lock as
    held (by a thread that does not exist there): its first torch-path call hung for good."""
    import subprocess

    run = subprocess.run([sys.executable, "-c", FORK_IN_SECTION], capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert run.stdout.split() == ["(50,", "False)", "False"], run.stdout


FORK_CHILD = """
import multiprocessing as mp, sys, torch, superkern
W = torch.randn(400, 16, generator=torch.Generator().manual_seed(0))
want = superkern.overlap_stats(W, backend="cpu", bins=8).mean_sq  # starts the OpenMP pool

def child(q):
    q.put(superkern.overlap_stats(W, backend="cpu", bins=8).mean_sq)

ctx = mp.get_context("fork")
q = ctx.Queue()
p = ctx.Process(target=child, args=(q,))
p.start()
p.join(60)
if p.is_alive():
    p.kill()
    sys.exit("the forked child hung")
print(q.get(timeout=5) == want)
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "register_at_fork"), reason="no fork")
def test_cpu_kernel_runs_in_a_forked_child(tmp_path):
    """A multiprocessing 'fork' child of a process that had run the cpu kernel hung in its
    first call: libgomp's thread pool does not survive fork. A forked child now runs the
    kernel on one thread (bitwise the same result)."""
    import subprocess

    from superkern import backend

    if not getattr(backend.extension(), "built_with_openmp", False):
        pytest.skip("extension built without OpenMP")
    run = subprocess.run([sys.executable, "-c", FORK_CHILD], capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0 and run.stdout.split() == ["True"], (run.stdout, run.stderr)


FORK_FLAG = """
import os, torch
from superkern.ops import overlap_cpu as K
def child_flag():
    pid = os.fork()
    if pid == 0:
        os._exit(10 + int(K._FORKED))
    return os.waitpid(pid, 0)[1] >> 8
before = child_flag()
K.overlap_partials_cpu(torch.randn(300, 8), torch.ones(300), bins=0, topk=0, num_threads=2)
print(before, child_flag())
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "register_at_fork"), reason="no fork")
def test_every_forked_child_runs_the_kernel_single_threaded():
    """Also a child of a process that never ran the kernel: the extension shares the OpenMP
    runtime torch loaded, and torch's own parallel ops leave its pool behind too (a version
    that flagged only children of a process that had run the kernel hung)."""
    import subprocess

    from superkern import backend

    if not getattr(backend.extension(), "built_with_openmp", False):
        pytest.skip("extension built without OpenMP")
    run = subprocess.run([sys.executable, "-c", FORK_FLAG], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stdout.split() == ["11", "11"], (run.stdout, run.stderr)


def test_cpu_kernel_threads_follow_torch_in_every_thread():
    """The kernel took OpenMP's default: after torch.set_num_threads(1) it ran on one thread
    from the main thread but on every core from a worker thread (OpenMP's setting is per
    thread). It now follows torch's count, and the probe reports what the kernel used."""
    from superkern.ops.overlap_cpu import cpu_threads

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with ThreadPoolExecutor(1) as ex:
            assert ex.submit(cpu_threads).result() == 1
        assert cpu_threads(3) in (1, 3)  # 1: a build without OpenMP
        rep = superkern.probe(torch.randn(50, 8), backend="cpu", device="cpu",
                              progress=False, splits=False)
        assert rep.run["threads"] == cpu_threads() == 1
    finally:
        torch.set_num_threads(old)

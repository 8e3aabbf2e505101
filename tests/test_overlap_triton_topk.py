"""The Triton overlap kernel's exact top-k: reruns when the candidate buffer overflows or
the first threshold collects too few pairs, exact ties, k = all pairs (interpreter on CPU)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from superkern import backend as B
from superkern.ops.overlap_ref import overlap_partials_torch
from tests.utils import assert_allclose

if B.available("cuda" if torch.cuda.is_available() else "cpu")["triton"] is not None:
    pytest.skip("triton backend unavailable here", allow_module_level=True)

import superkern.triton.overlap as T  # noqa: E402  (needs triton)
from tests.test_overlap_triton import DEV, TOL, _operands, _rand  # noqa: E402


def _counted_passes(n, first_threshold, monkeypatch, caps=None):
    """Operands of an (n, 16) head, with the top-k search started from ``first_threshold``
    and every kernel pass's threshold recorded in ``calls`` (its buffer length in ``caps``
    when given); also the real launcher."""
    X, s = _operands(_rand(n, 16, seed=5))
    calls: list = []
    launch = T._launch

    def counting(*a, **kw):
        calls.append(kw["thr"])
        if caps is not None:
            caps.append(kw["cap"])
        return launch(*a, **kw)

    monkeypatch.setattr(T, "_launch", counting)
    monkeypatch.setattr(T._topk, "initial_threshold", lambda *a, **kw: first_threshold)
    return X, s, calls, launch


@pytest.mark.parametrize("grow", [True, False])
@pytest.mark.parametrize("n, k, cap", [(200, 6, 7), (200, 6, 13), (9, 6, 7)])
def test_topk_overflow_reruns_until_exact(n, k, cap, grow, monkeypatch):
    # Start from the weakest valid threshold (every pair a candidate) so that the buffer
    # overflows. Growing: the buffer takes all P candidates and the same threshold runs
    # once more. Not growing (GROW_MAX = 0): with 2k <= n the 2k-th largest row max is the
    # next threshold; with 2k > n (no such bound) the k-th best collected pair is, pass
    # after pass.
    if not grow:
        monkeypatch.setattr(T._topk, "GROW_MAX", 0)
    P = n * (n - 1) // 2
    caps: list = []
    X, s, calls, _ = _counted_passes(n, (-1.0, float(P)), monkeypatch, caps)
    got = T.overlap_partials_triton(X, s, bins=0, topk=k, topk_capacity=cap)
    ref = overlap_partials_torch(X, s, bins=0, topk=k)
    if grow:
        assert calls == [calls[0]] * 2 and caps == [cap, P], (calls, caps)
    assert len(calls) >= 2, f"a {cap}-slot buffer must overflow; passes: {calls}"
    keys = [(-t, i, j) for t, i, j in calls]
    assert keys == sorted(keys, reverse=True), f"thresholds must only tighten: {calls}"
    assert torch.equal(got.topk_pairs, ref.topk_pairs), (got.topk_pairs, ref.topk_pairs)
    assert_allclose("topk values", got.topk_values, ref.topk_values, rtol=0, atol=TOL)


@pytest.mark.parametrize("n, want_thr", [(200, "row-max bound"), (9, -1.0)])
def test_topk_estimate_too_high_reruns_with_a_lower_threshold(n, want_thr, monkeypatch):
    """A first threshold above the k-th |c| collects fewer than k pairs. The second pass uses
    the 2k-th largest row max (n >= 2k), or -1 (every pair) when there is no such bound, and
    then the result is exact. A run that never collects k pairs stops with an error."""
    k = 6
    X, s, calls, launch = _counted_passes(n, (0.999, 1.0), monkeypatch)
    got = T.overlap_partials_triton(X, s, bins=0, topk=k)
    ref = overlap_partials_torch(X, s, bins=0, topk=k)
    assert len(calls) == 2, calls
    if want_thr == "row-max bound":
        row_max = torch.sort(ref.row_max_abs, descending=True).values
        assert calls[1][0] == pytest.approx(float(row_max[2 * k - 1]), abs=1e-6)
        assert calls[1][0] <= float(ref.topk_values.abs()[-1])  # admits the k-th pair
    else:
        assert calls[1][0] == want_thr
    assert torch.equal(got.topk_pairs, ref.topk_pairs)
    assert_allclose("topk values", got.topk_values, ref.topk_values, rtol=0, atol=TOL)
    # A kernel that never collects k pairs: the loop gives up with the numbers.
    monkeypatch.setattr(T, "_launch", lambda *a, **kw: dataclasses.replace(
        launch(*a, **kw), count=0))
    with pytest.raises(RuntimeError, match=rf"top-k did not converge .*N={n}, k={k}"):
        T.overlap_partials_triton(X, s, bins=0, topk=k)


@pytest.mark.parametrize("grow", [True, False])
def test_all_identical_rows_ties_and_termination(grow, monkeypatch):
    # Small integers: every dot product is exact, so all |c| tie exactly at 1 (signs from
    # the negated copies). Top-k must be the first pairs in (i, j) order, the argmax the
    # smallest other row, and a buffer barely larger than k must still converge: in two
    # passes when it may grow (whatever order a GPU's atomics fill it in).
    if not grow:
        monkeypatch.setattr(T._topk, "GROW_MAX", 0)
    g = torch.Generator().manual_seed(6)
    v = torch.randint(-3, 4, (1, 32), generator=g).float()
    v[0, 0] = 5.0
    W = v.repeat(130, 1).to(DEV)
    W[1::3] *= -1.0
    X, s = _operands(W)
    s = torch.full_like(s, float(s[0]))  # identical scale bits
    calls = []
    launch = T._launch
    monkeypatch.setattr(T, "_launch", lambda *a, **kw: calls.append(kw["thr"]) or launch(*a, **kw))
    got = T.overlap_partials_triton(X, s, bins=8, topk=9, topk_capacity=11)
    assert len(calls) >= 2, calls  # every pair ties with the best: the buffer overflows
    assert len(calls) == 2 or not grow, calls
    c = float((X[0] @ X[0]) * s[0] * s[0])
    want_pairs = torch.tensor([[0, j] for j in range(1, 10)])
    assert torch.equal(got.topk_pairs, want_pairs), got.topk_pairs
    sign = torch.tensor([-1.0 if j % 3 == 1 else 1.0 for j in range(1, 10)])
    assert torch.equal(got.topk_values, (c * sign).float()), got.topk_values
    want_arg = torch.zeros(130, dtype=torch.int64)
    want_arg[0] = 1
    assert torch.equal(got.row_argmax, want_arg)
    assert int(got.hist.sum()) == 130 * 129 // 2
    assert int(got.hist[0] + got.hist[-1]) == 130 * 129 // 2


def test_topk_equals_all_pairs():
    W = _rand(20, 8, seed=7)
    X, s = _operands(W)
    got = T.overlap_partials_triton(X, s, bins=0, topk=190)
    ref = overlap_partials_torch(X, s, bins=0, topk=190)
    assert torch.equal(got.topk_pairs, ref.topk_pairs)


def test_every_pass_launches_under_the_guard_of_its_rows_device(monkeypatch):
    """Triton launches on the current CUDA device, not the tensors' own: every pass (the
    first and each top-k rerun) must enter the guard for X's device, or rows on cuda:1 with
    cuda:0 current would be read from the wrong GPU."""
    X, s, calls, _ = _counted_passes(9, (-1.0, 36.0), monkeypatch)
    guarded: list = []
    real = T.on_device
    monkeypatch.setattr(T, "on_device", lambda dev: guarded.append(dev) or real(dev))
    T.overlap_partials_triton(X, s, bins=4, topk=6, topk_capacity=7)
    assert len(calls) >= 2, f"the 7-slot buffer must overflow; passes: {calls}"
    assert guarded == [X.device] * len(calls), (guarded, len(calls))


def test_the_guard_makes_the_rows_gpu_current():
    from superkern.triton._env import on_device

    assert on_device(torch.device("cpu")).__enter__() is None  # nothing to switch on CPU
    guard = on_device(torch.device("cuda", 1))  # built without touching a GPU
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs two GPUs")
def test_rows_on_the_second_gpu_give_the_same_partials_as_on_the_first():
    X, s = _operands(_rand(300, 40, seed=11, device="cuda:0"))
    ref = T.overlap_partials_triton(X, s, bins=16, topk=5)
    with torch.cuda.device(0):
        got = T.overlap_partials_triton(X.to("cuda:1"), s.to("cuda:1"), bins=16, topk=5)
    assert torch.equal(got.topk_pairs, ref.topk_pairs)
    assert int((got.hist - ref.hist).abs().sum()) <= 2  # two GPU models may round apart
    assert abs(got.sum_sq - ref.sum_sq) <= 1e-6 * ref.sum_sq


def test_threshold_estimate_runs_with_tf32_off_whatever_the_caller_set():
    """The subset Gram behind the first threshold is an fp32 product even when the caller
    turned tf32 on (its error could exceed the margin and cost an extra pass)."""
    from superkern._tf32 import matmul_precision, tf32_enabled
    from superkern.triton import _overlap_topk as K

    seen = []

    class _Flags(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
                seen.append(tf32_enabled())
            return func(*args, **(kwargs or {}))

    X, s = _operands(_rand(200, 24, seed=5))
    with matmul_precision("tf32"):  # the caller's setting
        with _Flags():
            t0, _ = K.initial_threshold(X, s, 10, max_rows=64, rel_margin=2 ** -6)
        assert tf32_enabled()  # restored afterwards
    assert seen and not any(seen), seen
    assert 0 < t0 < 1

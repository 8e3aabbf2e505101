"""What keeps the Triton kernels right on the Triton the GPU machine has (3.6; CI has 3.7.1):
launch configurations chosen by version, and the backport of 3.7's interpreter fix."""
from __future__ import annotations

import numpy as np
import pytest

triton = pytest.importorskip("triton")


def test_gpu_config_follows_the_triton_version(monkeypatch):
    """Triton 3.6 spills in the fused dW/db loop with 64-entry sparse chunks: it gets 32."""
    from superkern.triton import _toy_common
    monkeypatch.delenv(_toy_common.ENV_CONFIG, raising=False)
    monkeypatch.setattr(_toy_common, "_TRITON_VERSION", (3, 6))
    assert _toy_common.toy_config(100, "cuda", "tf32").bk == 32
    monkeypatch.setattr(_toy_common, "_TRITON_VERSION", (3, 7))
    assert _toy_common.toy_config(100, "cuda", "tf32").bk == 64


def test_interpreter_loop_bound_fix_only_for_old_triton(monkeypatch):
    """Triton < 3.7's interpreter converts a loop bound with int(ndarray), which numpy >= 2.4
    refuses: superkern.triton wraps its tensor patcher so that __index__ uses .item(); on
    3.7+ it leaves the interpreter alone."""
    import superkern.triton as sk_triton
    import triton.runtime.interpreter as ti
    set_attrs = {}

    class Scope:
        def set_attr(self, obj, name, fn):
            set_attrs[name] = fn

    class Tensor:
        class handle:
            data = np.array([7])

    def patcher(tensor, scope):
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))

    monkeypatch.setattr(ti, "_patch_lang_tensor", patcher, raising=False)
    monkeypatch.setattr(triton, "__version__", "3.7.1")
    sk_triton._fix_interpreter_index()
    assert ti._patch_lang_tensor is patcher
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    sk_triton._fix_interpreter_index()
    ti._patch_lang_tensor(Tensor(), Scope())
    assert set_attrs["__index__"](Tensor()) == 7

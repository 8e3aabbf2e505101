"""The fused Triton toy kernels compiled offline for sm_90 (no GPU needed): every launch the
default configs make, as launched (where no product loop may spill registers) and with its
specialisable integer arguments equal to 1."""
from __future__ import annotations

import pytest

pytest.importorskip("triton")


_COMPILE_ALL = r'''
import re

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from superkern.triton._env import triton_version
from superkern.triton._toy_bench import compile_signature, launch_plans, sass_spill_report

# Triton 3.6 (the GPU machine's) keeps 3 spill instructions in the fused dW/db loop at width
# 128 in tf32 even with the 32-entry sparse chunks toy_config gives it (see its docstring).
allowed = {"cols M=100 tf32": 3} if triton_version() < (3, 7) else {}
seen, failed, spills, nan_max = set(), [], [], []
for name, kern, consts, warps, stages in launch_plans():
    key = (kern.fn.__name__, tuple(sorted(consts.items())), warps, stages)
    if key in seen:
        continue
    seen.add(key)
    sig = compile_signature(kern, consts)
    kept = {p.name for p in kern.params if p.do_not_specialize}
    for ones in (False, True):  # as launched, and every specialisable integer == 1 (constexpr)
        c = dict(consts, **({k: 1 for k, v in sig.items() if v == "i32" and k not in kept}
                            if ones else {}))
        s = {k: "constexpr" if k in c else v for k, v in sig.items()}
        # a launch marks every (16-byte aligned) pointer divisible by 16
        attrs = {(kern.arg_names.index(k),): [["tt.divisibility", 16]] for k, v in s.items()
                 if v.startswith("*")}
        try:
            cc = triton.compile(ASTSource(fn=kern, signature=s, constexprs=c, attrs=attrs),
                                target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": warps, "num_stages": stages})
        except Exception as exc:
            failed.append(f"{name} (ints = 1: {ones}): {type(exc).__name__}: {exc}"[:800])
            continue
        # the only float max in these kernels is ReLU, which must keep NaN (max.NaN.f32)
        if re.search(r"\bmax(\.ftz)?\.f32\b", cc.asm["ptx"]):
            nan_max.append(name)
        if not ones:
            regs, stack, inside = sass_spill_report(cc.asm["cubin"])
            print(f"{name:28s} regs={regs:3d} stack={stack:5d} spills_in_mma_loop={inside}")
            if inside > allowed.get(name, 0):
                spills.append(name)
print(len(seen), "launches", len({k[0] for k in seen}), "kernels")
assert not failed, "\n".join(failed)
assert not spills, f"register spills inside the product loop: {spills}"
assert not nan_max, f"float max that drops NaN (a diverged model's loss looks finite): {nan_max}"
'''


def test_every_kernel_compiles_for_sm90_with_integer_arguments_of_one():
    """Compiled Triton (not the interpreter the other CPU tests use) turns every integer
    argument equal to 1 into a constexpr: ``step`` on the first step, ``B``/``n`` in corner
    cases. Each toy kernel is compiled for sm_90 as launched and with all its integer
    arguments specialised to 1 (those not marked do_not_specialize), offline with Triton's
    bundled ptxas (no GPU needed). The as-launched builds must not spill registers inside
    their product loops (SASS read with cuobjdump), and ReLU must keep NaN (PTX max.NaN.f32;
    a plain max.f32 returns the other operand, so a diverged model would report a finite
    loss on the GPU while the interpreter, numpy's maximum, keeps NaN)."""
    from tests.utils import run_compiled_triton

    proc = run_compiled_triton(_COMPILE_ALL)
    assert " 11 kernels" in proc.stdout, proc.stdout

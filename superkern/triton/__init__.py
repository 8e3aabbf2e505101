"""Triton kernels and their launchers. Imported lazily: ``import superkern`` never needs Triton."""


def _fix_interpreter_index() -> None:
    """Triton < 3.7's CPU interpreter turns a tensor used as a loop bound into an int with
    ``int(ndarray)``, which NumPy >= 2.4 refuses for 1-element arrays ("only 0-dimensional
    arrays can be converted to Python scalars"; triton-lang/triton#9171, fixed in 3.7)."""
    try:
        import triton.runtime.interpreter as ti

        from superkern.triton._env import triton_version
    except Exception:  # noqa: BLE001 - no Triton, or an interpreter without this layout
        return
    if triton_version() >= (3, 7):
        return
    orig = getattr(ti, "_patch_lang_tensor", None)
    if orig is None or getattr(orig, "_superkern_fixed", False):
        return

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    patched._superkern_fixed = True
    ti._patch_lang_tensor = patched


_fix_interpreter_index()

"""Triton kernels and their launchers. Imported lazily: ``import superkern`` never needs Triton."""

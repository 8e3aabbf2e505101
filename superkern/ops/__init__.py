"""Ops: one module per op, each with a plain-PyTorch ``*_ref`` and a public dispatching function."""

"""The one switch for tf32 in torch's fp32 matmuls (cuBLAS and cuDNN), set and restored.

The flags are process-global: a thread that runs matmuls while another is inside the context
sees its setting. CPU matmuls do not read them."""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """fp32 matmuls with tf32 off ("fp32", the reference) or on ("tf32"), restored after.

    Only the ``allow_tf32`` flags are read and set: mixing them with
    ``torch.set_float32_matmul_precision`` can leave torch in a state where reading the
    precision raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

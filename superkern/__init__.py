"""superkern: compiled-kernel analysis of representation superposition and neural scaling.

Public API (all importable without a GPU, Triton or the compiled extension):

- :func:`overlap_stats`, :func:`overlap_moments_exact`, :func:`row_norm_stats`: geometry of a
  matrix's rows (pairwise cosine overlaps, norms), on the torch / cpu / triton / cuda backends.
"""
from superkern.backend import available as available_backends
from superkern.ops.norms import NormStats, row_norm_stats
from superkern.ops.overlap import overlap_moments_exact, overlap_stats
from superkern.ops.overlap_types import OverlapStats

__version__ = "0.1.0"

__all__ = [
    "NormStats", "OverlapStats", "available_backends", "overlap_moments_exact",
    "overlap_stats", "row_norm_stats", "__version__",
]

# LM-head probe. The subpackage superkern.probe is callable: superkern.probe(path, ...) runs the
# probe and returns a ProbeReport, while superkern.probe.loaders etc. stay importable.
from superkern import probe  # noqa: E402
from superkern.probe import Head, compare, load_head  # noqa: E402

__all__ += ["Head", "compare", "load_head", "probe"]

# Toy model of the paper (SPEC section 2): configs, training one model or many at once.
from superkern.toy import ToyConfig, ToyResult, toy_probabilities, train, train_many  # noqa: E402

__all__ += ["ToyConfig", "ToyResult", "toy_probabilities", "train", "train_many"]

# Resumable experiment grids over the toy model. The subpackage is callable like probe:
# superkern.sweep("fig1", quick=True) runs superkern.sweep.sweep.
# superkern.analysis (fits, figures) is not imported here: it pulls in scipy and matplotlib.
from superkern import sweep  # noqa: E402

__all__ += ["sweep"]

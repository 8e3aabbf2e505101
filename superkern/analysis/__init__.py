"""Analysis of sweep results: fits (pure functions), tables, figures (plotting only).

Nothing here trains a model: inputs are results files, count files and CSVs.
"""
from superkern.analysis.fits import (PowerLawFit, WidthLawFit, fit_power_law,
                                     fit_power_law_seeds, fit_width_law, paper_fit_range,
                                     select_range)
from superkern.analysis.scaling import (CellFit, FitReport, fit_cells, fit_report,
                                        format_report, phi_table, unlearned_table)
from superkern.analysis.tables import Results, Run, load_results, load_width_csv
from superkern.analysis.zipf import ZipfFit, load_counts, zipf_fit

__all__ = ["CellFit", "FitReport", "PowerLawFit", "Results", "Run", "WidthLawFit", "ZipfFit",
           "fit_cells", "fit_power_law", "fit_power_law_seeds", "fit_report", "fit_width_law",
           "format_report", "load_counts", "load_results", "load_width_csv", "make_figures",
           "paper_fit_range", "phi_table", "select_range", "unlearned_table", "zipf_fit"]


def make_figures(*args, **kwargs):
    """See :func:`superkern.analysis.figures.make_figures` (imports matplotlib lazily)."""
    from superkern.analysis.figures import make_figures as _make

    return _make(*args, **kwargs)

"""CLI subcommands, one module each (thin shims over library functions)."""
import argparse


def path_arg(text: str) -> str:
    """argparse ``type=`` of every file or folder argument: an empty one ('--out ""', a shell
    variable that expanded to nothing) would mean the current folder to ``Path('')``."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; name a file or folder")
    return text


def add_loss_option(p) -> None:
    """``--loss final|test`` of ``fit`` and ``figures``: which stored loss is analysed."""
    p.add_argument("--loss", default="final", choices=("final", "test"),
                   help="final: mean training loss of the last 100 steps (default); test: the "
                        "final model's loss on fresh batches (runs trained with test_batches)")


def show_then_save(show, save):
    """Print a command's results, then write its files: the table first, so that it is seen
    even when a write fails. A failed print (the reader of a pipe gone, a full disk behind a
    redirected stdout) must not cost the files (the models of `train`): they are written
    first, then the print's error is raised. Returns what ``save`` returns."""
    try:
        show()
    except BaseException:  # OSError, a character stdout cannot encode, Ctrl-C while printing
        save()
        raise
    return save()

"""CLI subcommands, one module each (thin shims over library functions)."""


def add_loss_option(p) -> None:
    """``--loss final|test`` of ``fit`` and ``figures``: which stored loss is analysed."""
    p.add_argument("--loss", default="final", choices=("final", "test"),
                   help="final: mean training loss of the last 100 steps (default); test: the "
                        "final model's loss on fresh batches (runs trained with test_batches)")

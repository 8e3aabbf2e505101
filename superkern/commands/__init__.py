"""CLI subcommands, one module each (thin shims over library functions)."""

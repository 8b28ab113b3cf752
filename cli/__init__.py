"""The `lmdisp` command line (installed as `lmdisp.cli`): a thin Typer layer over `lmdisp`."""

"""The `lmdisp` command line: a thin Typer layer over the `lmdisp` library."""

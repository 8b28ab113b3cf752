"""`python -m lmdisp ...` is the `lmdisp` command."""

from lmdisp.cli.main import main

main()

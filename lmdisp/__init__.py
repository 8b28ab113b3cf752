"""lmdisp: embedding condensation and the dispersion loss, as a library and a CLI.

Nothing heavy is imported here, so `import lmdisp` and `lmdisp --help` stay instant.
"""

__version__ = "0.1.0"

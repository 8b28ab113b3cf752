"""lmdisp: embedding condensation and the dispersion loss, as a library and a CLI.

Nothing heavy is imported here, so `import lmdisp` and `lmdisp --help` stay instant.
"""

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict[str, str]):
    """A module `__getattr__` that imports `exports` (name -> submodule of `package`) on first
    use, so importing a pillar (`lmdisp.train`, ...) loads no heavy library."""
    import importlib

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__

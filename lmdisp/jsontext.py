"""Strict JSON (RFC 8259) for every file lmdisp writes: `json.dumps` writes NaN and the
infinities as the bare tokens `NaN`/`Infinity`, which strict parsers (JSON.parse, jq, Go's
encoding/json) refuse; here they are null. NumPy scalars and arrays, paths and dataclasses
are converted too."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def json_text(data: Any, indent: int | None = None) -> str:
    """`data` as strict JSON text: every NaN or infinity written as null."""
    return json.dumps(_finite(data), indent=indent, default=lambda o: _finite(_json_default(o)), allow_nan=False)


def _finite(obj):
    """`obj` with every non-finite float (Python or NumPy) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    return str(obj)

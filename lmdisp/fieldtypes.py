"""The types a config field can have beyond the plain ones: ranges (`Positive`, `Fraction`,
... or any `Annotated[float, annotated_types.Gt(0)]`), choices (`Literal[...]`, optionally
`Annotated[Literal[...], Normalize(fn)]` for other spellings), and how they are described in
messages and `--help` (`type_name`, `range_of`, `choices_of`). `lmdisp.config` checks values
against them through pydantic."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Annotated, Any

import annotated_types as at

# Ranges a field's type can carry (pydantic checks them; messages and --help describe them).
Positive = Annotated[float, at.Gt(0)]
NonNegative = Annotated[float, at.Ge(0)]
PositiveInt = Annotated[int, at.Ge(1)]
NonNegativeInt = Annotated[int, at.Ge(0)]
Fraction = Annotated[float, at.Ge(0), at.Lt(1)]      # [0, 1)
Probability = Annotated[float, at.Ge(0), at.Le(1)]   # [0, 1]
OpenUnit = Annotated[float, at.Gt(0), at.Lt(1)]      # (0, 1)
# A model's weight dtype (`lmdisp.models.DTYPES` lists the same names). `auto` means one thing on
# every command: the checkpoint's own dtype (the `torch_dtype` its config names; float32 for
# random:<config> models), as transformers' and lm-eval's `dtype="auto"`.
Dtype = typing.Literal["auto", "float32", "bfloat16", "float16"]


@dataclasses.dataclass(frozen=True)
class Normalize:
    """`Annotated[Literal[...], Normalize(fn)]`: `fn` maps other spellings of a value to the
    listed one before the check (e.g. `l2_repel` -> `l2-repel`)."""

    fn: Any


def normalizers(hint: Any) -> list[Normalize]:
    return [m for a in union_args(hint) for m in strip(a)[1] if isinstance(m, Normalize)]


def strip(hint: Any) -> tuple[Any, tuple]:
    """(the type under `Annotated`, its metadata)."""
    if typing.get_origin(hint) is Annotated:
        base, *meta = typing.get_args(hint)
        return base, tuple(meta)
    return hint, ()


def base_type(hint: Any) -> Any:
    """`hint` without its choices and range: `Literal` -> str, `Annotated[float, Gt(0)]` -> float."""
    args = [strip(a)[0] for a in union_args(hint)]
    args = [str if typing.get_origin(a) is typing.Literal else a for a in args]
    return typing.Union[tuple(args)] if len(args) > 1 else args[0]


def choices_of(hint: Any) -> tuple:
    """The values of a `Literal` field (also under `Optional` / `Annotated`), else ()."""
    for a in union_args(hint):
        a = strip(a)[0]
        if typing.get_origin(a) is typing.Literal:
            return typing.get_args(a)
    return ()


def range_of(hint: Any) -> str:
    """`> 0`, `>= 1`, `in [0, 1)`: the range a field's constraints allow ("" if none)."""
    lo = hi = None
    for a in union_args(hint):
        for m in strip(a)[1]:
            for c in (m if isinstance(m, at.Interval) else [m]):
                if isinstance(c, (at.Gt, at.Ge)):
                    lo = ("(" if isinstance(c, at.Gt) else "[", c.gt if isinstance(c, at.Gt) else c.ge)
                elif isinstance(c, (at.Lt, at.Le)):
                    hi = (")" if isinstance(c, at.Lt) else "]", c.lt if isinstance(c, at.Lt) else c.le)
    if lo and hi:
        return f"in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
    if lo:
        return f"{'>' if lo[0] == '(' else '>='} {lo[1]:g}"
    if hi:
        return f"{'<' if hi[0] == ')' else '<='} {hi[1]:g}"
    return ""


@functools.lru_cache(maxsize=None)
def adapter(hint: Any):
    from pydantic import TypeAdapter

    return TypeAdapter(without_normalize(hint))


def without_normalize(hint: Any) -> Any:
    base, meta = strip(hint)
    kept = tuple(m for m in meta if not isinstance(m, Normalize))
    if len(kept) != len(meta):
        return Annotated[(base, *kept)] if kept else base
    args = union_args(hint)
    if len(args) > 1 and any(normalizers(a) for a in args):
        return typing.Union[tuple(without_normalize(a) for a in args)]
    return hint


def union_args(hint: Any) -> tuple:
    hint = strip(hint)[0] if typing.get_origin(strip(hint)[0]) in _UNIONS else hint
    return typing.get_args(hint) if typing.get_origin(hint) in _UNIONS else (hint,)


_UNIONS = (typing.Union, types.UnionType)


def is_optional(hint: Any) -> bool:
    return type(None) in union_args(hint)


def is_list(hint: Any) -> bool:
    return any(typing.get_origin(strip(a)[0]) is list or strip(a)[0] is list for a in union_args(hint))


def accepts(hint: Any, kinds: tuple) -> bool:
    return any(strip(a)[0] in kinds for a in union_args(hint))


def type_name(hint: Any) -> str:
    """`float`, `int or None`, `list of str`: the expected type in an error message."""
    names = []
    for a in union_args(hint):
        a, _ = strip(a)
        if a is type(None):
            continue
        if typing.get_origin(a) is list:
            names.append("a comma list of " + "/".join(t.__name__ for t in typing.get_args(a)))
        elif typing.get_origin(a) is typing.Literal:
            names.append("one of " + ", ".join(map(str, typing.get_args(a))))
        else:
            names.append({"str": "text", "bool": "a boolean (true/false)", "int": "an integer",
                          "float": "a number"}.get(getattr(a, "__name__", str(a)), getattr(a, "__name__", str(a))))
    shown = " or ".join(names) + (f" {range_of(hint)}" if range_of(hint) else "")
    return shown + (" (or null)" if is_optional(hint) else "")

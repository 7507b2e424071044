"""Grids of code parameters for sweeps: numbers and inclusive ``start:stop:step`` ranges, parsed with clear errors.

``spikegcn sweep`` and ``spikegcn mape`` read their ``--T``/``--Q``/``--Tw`` values through :func:`grid_type`;
:func:`grid_points` and :func:`point_key` name the points of a sweep record. No numpy or torch here, so the CLI can
parse its arguments before importing either.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence

__all__ = ["GridError", "parse_grid", "grid_type", "flatten", "point_key", "grid_points"]


class GridError(ValueError):
    """A grid specification that cannot be parsed."""


def _number(text: str, integer: bool, where: str) -> float | int:
    try:
        v = float(text)
    except ValueError:
        raise GridError(f"{where}{text!r} is not a number") from None
    if not math.isfinite(v):
        raise GridError(f"{where}{text!r} is not a finite number")
    if integer:
        if not v.is_integer():
            raise GridError(f"{where}{text!r} is not an integer")
        return int(v)
    return v


def parse_grid(spec: str | Sequence[str], integer: bool = False, name: str = "") -> list:
    """Values of a grid given as numbers and/or inclusive ``start:stop:step`` ranges.

    ``"1.1:2.0:0.1"`` -> ``[1.1, 1.2, ..., 2.0]``; ``["8", "12", "16"]`` -> ``[8, 12, 16]``. Values are rounded to
    10 decimals (no ``1.2000000000000002``), duplicates dropped, order kept. ``name`` prefixes error messages.

    Raises:
        GridError: a value that is not a number (an integer when ``integer``), a range whose start exceeds its
            stop, a step that is not positive, or a range of more than 10,000 points.
    """
    pre = f"{name}: " if name else ""
    tokens = [spec] if isinstance(spec, str) else list(spec)
    if not tokens:
        raise GridError(f"{pre}no values given")
    out: list = []
    for tok in tokens:
        tok = str(tok).strip()
        parts = tok.split(":")
        if len(parts) == 1:
            vals = [_number(tok, integer, pre)]
        elif len(parts) == 3:
            where = f"{pre}range {tok!r}: "
            start, stop, step = (_number(p, integer, where) for p in parts)
            if step <= 0:
                raise GridError(f"{where}the step must be positive, got {parts[2]}")
            if start > stop:
                raise GridError(f"{where}start {parts[0]} is greater than stop {parts[1]} "
                                f"(write start:stop:step with start <= stop)")
            n = int(math.floor((stop - start) / step + 1e-9)) + 1
            if n > 10_000:
                raise GridError(f"{where}{n} points; at most 10,000")
            vals = [start + i * step for i in range(n)]
        else:
            raise GridError(f"{pre}{tok!r} is neither a number nor a start:stop:step range")
        for v in vals:
            v = int(v) if integer else round(float(v), 10)
            if v not in out:
                out.append(v)
    return out


def grid_type(integer: bool, name: str, minimum: float | None = None, strict: bool = False):
    """An ``argparse`` ``type=`` that parses one grid token (number or range) into a list, with a clear error."""

    def parse(tok: str) -> list:
        try:
            vals = parse_grid(tok, integer=integer)
        except GridError as exc:  # argparse prefixes "argument <name>: "
            raise argparse.ArgumentTypeError(str(exc)) from None
        if minimum is not None:
            bad = [v for v in vals if (v <= minimum if strict else v < minimum)]
            if bad:
                rel = ">" if strict else ">="
                raise argparse.ArgumentTypeError(f"values must be {rel} {minimum:g}, got {bad[0]:g} in {tok!r}")
        return vals

    parse.__name__ = f"{name} grid"
    return parse


def flatten(lists: Iterable[Iterable] | None) -> list | None:
    if lists is None:
        return None
    out: list = []
    for lst in lists:
        for v in lst:
            if v not in out:
                out.append(v)
    return out


def point_key(T: int, Q: float, Tw: int) -> str:
    return f"T{int(T)}_Q{float(Q):g}_Tw{int(Tw)}"


def grid_points(Ts: Sequence[int], Qs: Sequence[float], Tws: Sequence[int] | None) -> list[tuple[int, float, int]]:
    """``(T, Q, Tw)`` of every grid point; no ``Tws`` means ``Tw = T`` (functional, exact there)."""
    pts = []
    for T in Ts:
        for Q in Qs:
            for Tw in (Tws if Tws else [T]):
                pts.append((int(T), float(Q), int(Tw)))
    return pts

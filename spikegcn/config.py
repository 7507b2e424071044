r"""Schemas of the YAML run configs (``configs/textgcn/<dataset>.yaml``), checked before any work starts.

A schema maps each allowed key to a :class:`Field` (type, range, allowed values, or a nested schema);
:func:`validate` refuses unknown keys (suggesting the closest known one), wrong types (``seed: "abc"``,
``epochs: "many"``, ``modes: functional`` written as a string) and values out of range with one
:class:`ConfigError` naming the file, the key and the remedy. It does not import torch, so the command line checks a
config in milliseconds, before it builds a graph or trains anything.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["ConfigError", "Field", "TRAIN_SCHEMA", "TEXTGCN_SCHEMA", "validate", "load_config"]

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
               dict: "a mapping"}


class ConfigError(ValueError):
    """A run config that does not match its schema."""


@dataclass(frozen=True)
class Field:
    """One config key: its type (``int`` accepts no bool, ``float`` accepts integers), an optional range check
    ``check(value) -> problem or None``, allowed ``choices`` (for a list: of every item), a nested ``schema`` for
    mappings, and whether ``null`` is allowed."""

    kind: type
    check: Callable[[Any], str | None] | None = None
    choices: tuple | None = None
    schema: Mapping[str, Field] | None = field(default=None, repr=False)
    nullable: bool = False


def _is(kind: type, v: Any) -> bool:
    if kind is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if kind is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return isinstance(v, kind)


def at_least(lo: float, strict: bool = False) -> Callable[[Any], str | None]:
    return lambda v: None if (v > lo if strict else v >= lo) else f"must be {'>' if strict else '>='} {lo:g}"


def below(hi: float) -> Callable[[Any], str | None]:
    return lambda v: None if 0 <= v < hi else f"must lie in [0, {hi:g})"


MODES = ("functional", "exact")

#: ``train:`` section: :class:`spikegcn.experiments.textgcn_train.TrainConfig` without ``seed`` (the top-level
#: ``seed`` sets it).
TRAIN_SCHEMA: dict[str, Field] = {
    "hidden": Field(int, at_least(1)),
    "dropout": Field(float, below(1)),
    "lr": Field(float, at_least(0, strict=True)),
    "weight_decay": Field(float, at_least(0)),
    "epochs": Field(int, at_least(1)),
    "early_stopping": Field(int, at_least(0)),
    "tf_adam_eps": Field(bool),
}

#: ``spikegcn textgcn --config``.
TEXTGCN_SCHEMA: dict[str, Field] = {
    "dataset": Field(str),
    "T": Field(int, at_least(1)),
    "Q": Field(float, at_least(1, strict=True)),
    "Tw": Field(int, at_least(0), nullable=True),
    "seed": Field(int, at_least(0)),
    "train": Field(dict, schema=TRAIN_SCHEMA),
    "modes": Field(list, choices=MODES),
}


def validate(cfg: Any, schema: Mapping[str, Field], where: str = "config", prefix: str = "") -> dict:
    """Check ``cfg`` against ``schema``; returns it unchanged or raises :class:`ConfigError`."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: {prefix or 'the file'} must be a mapping of keys to values, "
                          f"got {type(cfg).__name__}")
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown key '{name}'{hint}; known keys: {', '.join(schema)}")
        _check(schema[key], value, name, where)
    return cfg


def _check(f: Field, value: Any, name: str, where: str) -> None:
    if value is None:
        if f.nullable:
            return
        raise ConfigError(f"{where}: '{name}' is empty; give {_TYPE_NAMES[f.kind]} or remove the key")
    if not _is(f.kind, value):
        hint = ""
        if f.kind is list and f.choices and isinstance(value, str):
            hint = f" (write a YAML list, e.g. {name.split('.')[-1]}: [{value}])"
        raise ConfigError(f"{where}: '{name}' must be {_TYPE_NAMES[f.kind]}, got {value!r:.60} "
                          f"({type(value).__name__}){hint}")
    if f.schema is not None:
        validate(value, f.schema, where, prefix=f"{name}.")
    items = value if f.kind is list else [value]
    if f.kind is list and not items:
        raise ConfigError(f"{where}: '{name}' is an empty list")
    if f.choices is not None:
        bad = [v for v in items if v not in f.choices]
        if bad:
            raise ConfigError(f"{where}: '{name}' has {bad[0]!r:.40}; allowed: {', '.join(map(str, f.choices))}")
    if f.check is not None:
        problem = f.check(value)
        if problem:
            raise ConfigError(f"{where}: '{name}' {problem}, got {value!r:.60}")


def load_config(path: str | Path, schema: Mapping[str, Field]) -> dict:
    """Read a YAML config and :func:`validate` it; missing file, bad YAML and schema errors raise
    :class:`ConfigError` naming the file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found")
    try:
        cfg = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {' '.join(str(exc).split())}") from None
    return validate({} if cfg is None else cfg, schema, where=f"config {p}")

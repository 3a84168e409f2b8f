"""`run --config FILE`: a run's settings from a TOML, YAML or JSON file, or from the `config.json` a
run wrote (its `config` object), so that a run can be repeated or varied from a file.

Keys are `RunConfig` fields, spelled as the flags (`delta-t`) or as the fields (`delta_t`), plus the
grid's `methods` (a list or a comma list) and `seeds` (a count or a list); `method`, `sparsity` (a
number or a list), `seed` and `preset` name the grid too. Values take the fields' types (a list or a
comma list for `lr_milestones`, ...). Command-line flags override the file.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

from .config import RunConfig

GRID_KEYS = ("preset", "methods", "method", "sparsity", "seeds", "seed")
FORMATS = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}


def _parse(path: Path) -> Any:
    """The file's content, by its suffix; ValueError naming the file and what is wrong."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"--config {path}: unknown file type; use a .toml, .yaml/.yml or .json file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"--config {path} does not exist; pass a TOML, YAML or JSON file of settings") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"--config {path} is unreadable ({getattr(err, 'strerror', None) or err})") from None
    if kind == "TOML":
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            import tomli as tomllib
        errors: tuple[type[Exception], ...] = (tomllib.TOMLDecodeError,)
        load = tomllib.loads
    elif kind == "YAML":
        import yaml

        errors, load = (yaml.YAMLError,), yaml.safe_load
    else:
        errors, load = (json.JSONDecodeError,), json.loads
    try:
        return load(text)
    except errors as err:
        raise ValueError(f"--config {path} is not valid {kind} ({' '.join(str(err).split())})") from None


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """`value` as field `name`'s declared type (numbers from strings, lists as tuples); ValueError otherwise."""
    number = (int, float)
    try:
        if kind is float and isinstance(value, str):
            return float(value)
        if kind is int and isinstance(value, str):
            return int(value)
        if typing.get_origin(kind) is tuple:
            items = value.split(",") if isinstance(value, str) else value
            items = [items] if isinstance(items, number) and not isinstance(items, bool) else items
            if not isinstance(items, list | tuple):
                raise ValueError
            return tuple(float(v) for v in items if not (isinstance(v, str) and not v.strip()))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {'a list of numbers' if kind is not float else 'a number'}, "
                         f"got {value!r}") from None
    return value


def read_settings(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(grid keys, RunConfig settings) of settings file `path`: a flat table of settings, or a run's
    config.json (its `config` object). ValueError naming the file and the fix for an unknown key or a
    value of the wrong type; ranges are checked with the rest of the run's settings."""
    if not str(path).strip():
        raise ValueError("--config is empty; pass a TOML, YAML or JSON file of settings, or a run's config.json")
    path = Path(path)
    content = _parse(path)
    if isinstance(content, dict) and isinstance(content.get("config"), dict) and "config_key" in content:
        content = content["config"]  # a run's config.json
    if not isinstance(content, dict):
        raise ValueError(f"--config {path} must hold a table of settings (key = value), "  # noqa: TRY004 (one error line)
                         f"not {type(content).__name__}")
    kinds = typing.get_type_hints(RunConfig)
    grid, settings, unknown = {}, {}, []
    for key, value in content.items():
        name = str(key).replace("-", "_")
        if name in GRID_KEYS:
            grid[name] = value
        elif name in kinds:
            try:
                settings[name] = _coerce(name, kinds[name], value)
            except ValueError as err:
                raise ValueError(f"--config {path}: {err}") from None
        else:
            unknown.append(str(key))
    if unknown:
        known = sorted({*GRID_KEYS, *(f.name for f in dataclasses.fields(RunConfig))})
        raise ValueError(f"--config {path}: unknown setting(s) {', '.join(unknown)}; known settings: "
                         f"{', '.join(known)}")
    return grid, settings


def grid_text(grid: dict[str, Any], key: str) -> str | None:
    """A grid key of the file as the flag's text: `methods`/`method` and `sparsity` as comma lists,
    `seeds` as a count or a comma list (`seed` as a one-element list); None if the file lacks it."""
    if key == "methods":
        value = grid.get("methods", grid.get("method"))
    elif key == "seeds":
        value = grid.get("seeds", [grid["seed"]] if "seed" in grid else None)
        if isinstance(value, list) and len(value) == 1:
            return f"{value[0]},"  # a list of one seed, not a count
    else:
        value = grid.get(key)
    if value is None:
        return None
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)

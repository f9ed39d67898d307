"""Typed configuration: dataclasses loaded from TOML, with command-line flags on top.

Every command describes its settings as one dataclass. Each field becomes a flag
(``--field-name``, or the flag named in ``field(metadata={"flag": ...})``) whose help
text shows the default; ``--config FILE`` loads a TOML file whose keys are the field
names; flags given on the command line override the file, and the file overrides the
defaults. Fields marked ``metadata={"path": True}`` hold paths or globs: given in a TOML
file they are relative to that file's directory, given as flags to the working directory.

A ``dict[str, V]`` field is a TOML table (``strategies = {seed = 0.5, block = 0.5}``) or
flag words ``--strategies seed=0.5 block=0.5``. A field's metadata may also bound its
value: ``"choices"`` (a tuple of allowed values), ``"min"`` and ``"max"`` (inclusive) and
``"above"`` (exclusive lower bound), each applied to every element of a list or table,
and ``"keys"`` (the names a table may hold).
A value outside them is refused with one message naming where it came from:
``config file F, key 'steps': ...`` or ``--steps: ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SCALARS = (int, float, str, Path)


def _mapping_of(tp: Any) -> type | None:
    """The value type of a ``dict[str, V]`` field (flags ``NAME=VALUE ...``, a TOML table)."""
    if typing.get_origin(tp) is dict:
        key, value = typing.get_args(tp)
        if key is not str or value not in _SCALARS:
            raise TypeError(f"unsupported config annotation {tp!r}")
        return value
    return None


def _field_kind(tp: Any) -> tuple[type, bool, bool]:
    """Return (scalar type, is_list, is_optional) for a field annotation."""
    optional = False
    if _mapping_of(tp) is not None:
        return _mapping_of(tp), True, False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported config annotation {tp!r}")
        tp, optional = args[0], True
        origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (inner, *_rest) = typing.get_args(tp)
        return inner, True, optional
    if tp is bool or tp in _SCALARS:
        return tp, False, optional
    raise TypeError(f"unsupported config annotation {tp!r}")


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per dataclass field, plus ``--config``; defaults stay in the dataclass."""
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML file with these settings (flags win)"
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        scalar, is_list, _optional = _field_kind(hints[f.name])
        default = _default_of(f)
        help_text = f.metadata.get("help", "")
        shown = "required" if default is dataclasses.MISSING else f"default: {default!r}"
        flag = flag_name(f)
        kwargs: dict[str, Any] = {
            "default": argparse.SUPPRESS,
            "help": f"{help_text} ({shown})" if help_text else f"({shown})",
        }
        if flag.startswith("-"):
            kwargs["dest"] = f.name
        else:  # a positional argument; optional here so that a config file may give it
            kwargs["nargs"] = "?"
        if scalar is bool and not is_list:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            # a mapping's flag takes NAME=VALUE words, parsed in _coerce
            kwargs["type"] = str if _mapping_of(hints[f.name]) is not None else scalar
            if is_list:
                kwargs["nargs"] = "+"
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            kwargs["metavar"] = f.metadata.get("metavar")
        parser.add_argument(flag, **kwargs)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _coerce(value: Any, tp: Any, where: str) -> Any:
    mapping = _mapping_of(tp)
    if mapping is not None:
        if isinstance(value, list | tuple):  # flags: NAME=VALUE ...
            pairs = [str(v).partition("=") for v in value]
            if any(not sep or not name for name, sep, _ in pairs):
                raise ValueError(f"{where}: expected NAME=VALUE pairs, got {list(value)!r}")
            value = {name: _parse_scalar(text, mapping, where) for name, _, text in pairs}
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a table of NAME = VALUE, got {value!r}")
        return {str(k): _coerce_scalar(v, mapping, f"{where}.{k}") for k, v in value.items()}
    scalar, is_list, optional = _field_kind(tp)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where}: a value is required")
    if is_list:
        if isinstance(value, str | Path) or not isinstance(value, list | tuple):
            value = [value]
        return [_coerce_scalar(v, scalar, where) for v in value]
    return _coerce_scalar(value, scalar, where)


def _parse_scalar(text: str, scalar: type, where: str) -> Any:
    """A flag's text as ``scalar`` (``int``, ``float``, ``str`` or ``Path``)."""
    try:
        return scalar(text)
    except ValueError:
        raise ValueError(f"{where}: expected {scalar.__name__}, got {text!r}") from None


def _coerce_scalar(value: Any, scalar: type, where: str) -> Any:
    if scalar is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if scalar is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if scalar is Path and isinstance(value, str):
        return Path(value)
    if not isinstance(value, scalar):
        raise ValueError(f"{where}: expected {scalar.__name__}, got {value!r}")
    return value


def _check_bounds(f: dataclasses.Field, value: Any, where: str) -> None:
    """Refuse a value outside the field's ``choices``, ``min``, ``max`` or ``above``."""
    meta = f.metadata
    if isinstance(value, dict) and "keys" in meta:
        unknown = sorted(set(value) - set(meta["keys"]))
        if unknown:
            known = ", ".join(meta["keys"])
            raise ValueError(f"{where}: unknown name {unknown[0]!r}; known: {known}")
    items = value.values() if isinstance(value, dict) else value
    for item in items if isinstance(value, list | dict) else [value]:
        if item is None:
            continue
        if "choices" in meta and item not in meta["choices"]:
            allowed = ", ".join(map(str, meta["choices"]))
            raise ValueError(f"{where}: must be one of {allowed}, got {item!r}")
        if "min" in meta and item < meta["min"]:
            raise ValueError(f"{where}: must be at least {meta['min']}, got {item!r}")
        if "max" in meta and item > meta["max"]:
            raise ValueError(f"{where}: must be at most {meta['max']}, got {item!r}")
        if "above" in meta and not item > meta["above"]:
            raise ValueError(f"{where}: must be above {meta['above']}, got {item!r}")


def load(
    cls: type[T],
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    flags: bool = False,
) -> T:
    """Build ``cls`` from its defaults, then ``config_file`` (TOML), then ``overrides``.

    ``flags``: the overrides came from the command line, so errors name their flags
    (else their option names). Every value given is checked against its field's bounds.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    if config_file is not None:
        try:
            with open(config_file, "rb") as fh:
                table = tomllib.load(fh)
        except FileNotFoundError:
            raise ValueError(f"config file {config_file} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config file {config_file} is not valid TOML: {err}") from None
        relative = {f.name for f in dataclasses.fields(cls) if f.metadata.get("path")}
        base = Path(config_file).parent
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in names:
                raise ValueError(
                    f"config file {config_file}: unknown key {key!r}; "
                    f"known keys: {', '.join(sorted(names))}"
                )
            where = f"config file {config_file}, key {key!r}"
            value = _coerce(value, hints[name], where)
            _check_bounds(fields[name], value, where)
            if name in relative:  # paths in a config file are relative to that file
                value = _rebase(value, base)
            values[name] = value
    for name, value in (overrides or {}).items():
        if name in names:
            where = flag_name(fields[name]) if flags else f"option {name!r}"
            values[name] = _coerce(value, hints[name], where)
            _check_bounds(fields[name], values[name], where)
    missing = [
        flag_name(f)
        for f in dataclasses.fields(cls)
        if _default_of(f) is dataclasses.MISSING and f.name not in values
    ]
    if missing:
        raise ValueError(f"missing required setting(s): {', '.join(missing)}")
    return cls(**values)


def _rebase(value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [_rebase(v, base) for v in value]
    if value is None:
        return None
    if Path(str(value)).is_absolute():
        return value
    return type(value)(base / str(value))


def expand_globs(patterns: str | Path | list[str], what: str) -> list[Path]:
    """Files named by paths or globs, each pattern's matches sorted; none is an error."""
    files: list[Path] = []
    for pattern in [patterns] if isinstance(patterns, str | Path) else patterns:
        text = str(pattern)
        matched = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        matched = [m for m in matched if Path(m).exists()]
        if not matched:
            raise FileNotFoundError(f"{what}: no file matches {text!r}")
        files.extend(Path(m) for m in matched)
    return files


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build ``cls`` from parsed arguments made by :func:`add_arguments`."""
    given = {k: v for k, v in vars(args).items() if k != "config"}
    return load(cls, getattr(args, "config", None), given, flags=True)

"""Frozen-dataclass configurations: building them from mappings (YAML files, CLI flags) with strict checks."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, InputNotFoundError

__all__ = ["config_from_mapping", "config_to_dict", "load_config_file", "field_types"]

C = TypeVar("C")


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type annotations of a dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, where) for v, a in zip(value, args))
        item = args[0] if args else Any
        out = [_coerce(v, item, where) for v in value]
        return tuple(out) if origin is tuple else out
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if annotation is str:
        return str(value)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return config_from_mapping(annotation, value, prefix=where)
    return value


def config_from_mapping(cls: type[C], mapping: Mapping[str, Any], *, base: C | None = None, prefix: str = "") -> C:
    """Build the frozen dataclass ``cls`` from ``mapping``, rejecting unknown keys by their dotted path.

    Values are converted to the annotated field types (strings from the command line included). Keys may
    use dashes or underscores. Fields missing from ``mapping`` keep their value in ``base`` (or the default).
    The dataclass's own ``__post_init__`` validation runs; its ``ValueError`` becomes a :class:`ConfigError`.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{prefix or cls.__name__}: expected a mapping of settings, got {mapping!r}")
    types_ = field_types(cls)
    values: dict[str, Any] = {}
    for key, value in mapping.items():
        name = str(key).replace("-", "_")
        where = f"{prefix}.{key}" if prefix else str(key)
        if name not in types_:
            known = ", ".join(sorted(types_))
            raise ConfigError(f"unknown setting {where!r} (known: {known})")
        values[name] = _coerce(value, types_[name], where)
    try:
        if base is not None:
            return dataclasses.replace(base, **values)  # type: ignore[type-var]
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix + ': ' if prefix else ''}{exc}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable dict of a dataclass configuration."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(config)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) configuration file into a mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: configuration file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid YAML/JSON configuration ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a configuration file must hold a mapping of settings")
    return data

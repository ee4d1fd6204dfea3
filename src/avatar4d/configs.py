"""Nested dataclass configs to plain JSON values and back (no pickle); unknown keys are named, not ignored."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigKeyError(ValueError):
    """A stored configuration has keys this version does not know, or lacks required ones."""


def read_versioned_json(path: Path, *, kind: str, format: str, version: object, error: type[Exception],
                        remedy: str) -> dict:
    """The JSON header of an avatar4d folder (``path`` inside it), checked to be valid JSON of ``format`` and
    ``version``.

    Args:
        kind: what the folder is, for messages ("dataset", "avatar").
        remedy: what to do about a folder of another version ("run prepare again").

    Raises:
        error: the file is not JSON, or names another format or version.
    """
    folder = path.parent
    try:
        header = json.loads(path.read_text())
    except json.JSONDecodeError as failure:
        raise error(f"{path} is not valid JSON ({failure})") from failure
    if not isinstance(header, dict) or header.get("format") != format:
        found = header.get("format") if isinstance(header, dict) else None
        raise error(f"{folder} is not an avatar4d {kind} (format {found!r})")
    if header.get("version") != version:
        raise error(f"{folder} is a version {header.get('version')} {kind}; this avatar4d reads version {version}: "
                    f"{remedy}")
    return header


def to_dict(config: Any) -> dict:
    """A dataclass config as nested plain values (lists for tuples), equal to its own JSON round trip."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def from_dict(cls: type[T], data: dict, *, path: str = "") -> T:
    """Rebuild a (nested) frozen dataclass from :func:`to_dict`'s output.

    Raises:
        ConfigKeyError: naming every unknown key (with its dotted path).
    """
    if not isinstance(data, dict):
        raise ConfigKeyError(f"{path or 'config'} should be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigKeyError("unknown configuration keys: " + ", ".join(f"{path}{k}" for k in unknown))
    values = {}
    for name in names & set(data):
        values[name] = _convert(hints[name], data[name], f"{path}{name}.")
    return cls(**values)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path=path)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(options[0], value, path) if len(options) == 1 else value
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_convert(inner, v, path) for v in value)
    return value


def differences(a: dict, b: dict, prefix: str = "") -> str:
    """The keys whose values differ between two :func:`to_dict` outputs, as ``"dotted.key: old -> new"``, joined."""
    out = []
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            inner = differences(a[key], b[key], f"{prefix}{key}.")
            if inner:
                out.append(inner)
        elif a.get(key) != b.get(key):
            out.append(f"{prefix}{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return ", ".join(out)

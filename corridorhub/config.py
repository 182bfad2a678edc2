"""Build the one Settings object: command-line flag > CORRIDORHUB_<NAME> > corridorhub.toml > default.

This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from store.errors import ConfigError
from store.settings import Settings

ENV_PREFIX = "CORRIDORHUB_"
DEFAULT_CONFIG_FILE = Path("corridorhub.toml")
_SECRETS = frozenset(f.name for f in fields(Settings) if f.metadata.get("secret"))


def _field_types() -> dict[str, type]:
    hints = typing.get_type_hints(Settings)
    out: dict[str, type] = {}
    for f in fields(Settings):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = args[0]
        out[f.name] = hint
    return out


def _coerce(name: str, raw: Any, kind: type, origin: str) -> Any:
    if raw is None:
        return None
    try:
        if kind is Path:
            if isinstance(raw, Path):
                return raw
            if not isinstance(raw, str) or not raw.strip():
                raise ValueError(raw)  # a TOML number, table or "" is no folder ("" would be ".")
            return Path(raw)
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            if isinstance(raw, float):
                return int(raw)
            if not isinstance(raw, (str, int)):
                raise ValueError(raw)
            return int(str(raw).replace("_", ""))
        if kind is float:
            if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
                raise ValueError(raw)
            return float(raw)
        if kind is str:
            if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
                raise ValueError(raw)
            return str(raw)
    except (ValueError, TypeError, OverflowError):
        shown = "***" if name in _SECRETS else repr(raw)
        raise ConfigError(f"Setting '{name}' from {origin} is not a valid {kind.__name__}: {shown}") from None
    raise ConfigError(f"Setting '{name}' has an unsupported type")  # pragma: no cover


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc.strerror}") from None
    section = data.get("corridorhub", data)
    if not isinstance(section, dict):
        raise ConfigError(f"Config file {path}: [corridorhub] must be a table")
    stray = sorted(set(data) - {"corridorhub"}) if section is not data else []
    if stray:  # silently ignored, a setting above [corridorhub] would look applied and not be
        names = ", ".join(map(repr, stray))
        raise ConfigError(f"Config file {path}: setting(s) outside [corridorhub]: {names}")
    return section


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the four sources; unknown names in the config file fail by name."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = os.environ if environ is None else environ
    kinds = _field_types()
    if config_file is None:
        env_file = environ.get(f"{ENV_PREFIX}CONFIG")
        config_file = (
            Path(env_file) if env_file else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None)
        )
    file_values = _read_toml(config_file) if config_file is not None else {}
    unknown = sorted(set(file_values) - set(kinds))
    if unknown:
        raise ConfigError(f"Config file {config_file}: unknown setting(s) {', '.join(map(repr, unknown))}")
    unknown_flags = sorted(set(flags) - set(kinds))
    if unknown_flags:
        raise ConfigError(f"Unknown setting(s) {', '.join(map(repr, unknown_flags))}")

    values: dict[str, Any] = {}
    for f in fields(Settings):
        env_name = ENV_PREFIX + f.name.upper()
        if f.name in flags:
            values[f.name] = _coerce(f.name, flags[f.name], kinds[f.name], "the command line")
        elif env_name in environ:
            values[f.name] = _coerce(f.name, environ[env_name], kinds[f.name], env_name)
        elif f.name in file_values:
            values[f.name] = _coerce(f.name, file_values[f.name], kinds[f.name], str(config_file))
        elif f.default is MISSING:  # pragma: no cover - every field has a default
            raise ConfigError(f"Setting '{f.name}' is missing")
    return Settings(**values)

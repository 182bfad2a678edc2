"""Shared pieces of the subcommands: settings from flags, logging, common options."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from corridorhub.config import load_settings
from store.settings import Settings


def settings_from(ctx: click.Context, **flags: Any) -> Settings:
    """The one Settings object for this command: flags > env > corridorhub.toml > defaults."""
    root = ctx.find_root().obj or {}
    config_file = root.get("config_file")
    if root.get("log_level"):
        flags.setdefault("log_level", root["log_level"])
    settings = load_settings(flags, config_file=Path(config_file) if config_file else None)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    return settings


lake_option = click.option(
    "--lake", type=click.Path(file_okay=False), default=None, help="Lake folder [default: ./data/lake]."
)
broker_option = click.option(
    "--broker",
    default=None,
    help="mqtt://[user:pass@]host:port or mqtts://... [default: mqtt://127.0.0.1:1883].",
)

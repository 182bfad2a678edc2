"""The ``corridorhub`` command.

Each subcommand lives in its own ``cmd_*.py`` module; this one assembles them and translates the
project's errors into one clear line on stderr and a non-zero exit (as sqlite-utils does).
"""

from __future__ import annotations

from typing import Any

import click

from corridorhub import __version__
from store.errors import CorridorHubError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CorridorHubError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="corridorhub")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Settings file (default: ./corridorhub.toml when present, or $CORRIDORHUB_CONFIG).",
)
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default INFO).")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, log_level: str | None) -> None:
    """Telemetry hub for the Haneda-Kamata 5G corridor trials.

    Capture MQTT telemetry into a Delta/Parquet lake, query it with SQL, publish open data.
    Settings: command-line flag > CORRIDORHUB_<NAME> environment variable > corridorhub.toml > default.
    """
    ctx.ensure_object(dict)
    ctx.obj["config_file"] = config_file
    ctx.obj["log_level"] = log_level


def _register() -> None:
    from corridorhub import (
        cmd_compact,
        cmd_demo,
        cmd_ingest,
        cmd_keys,
        cmd_publish,
        cmd_serve,
        cmd_simulate,
        cmd_sql,
    )

    for module in (
        cmd_demo,
        cmd_simulate,
        cmd_ingest,
        cmd_sql,
        cmd_serve,
        cmd_compact,
        cmd_publish,
        cmd_keys,
    ):
        cli.add_command(module.command)
    try:
        from corridorhub import cmd_bench
    except ImportError:  # pragma: no cover - bench is optional while it is being built
        return
    cli.add_command(cmd_bench.command)


_register()


def main() -> None:
    cli(prog_name="corridorhub")

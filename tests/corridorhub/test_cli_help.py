"""``corridorhub --help`` and each subcommand's ``--help``: exit 0, say what it does, list its options.

The subcommands are read from the click group itself, so a command added later is checked too.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from corridorhub.cli import cli


def _commands(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    out: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        out.append((path, command))
        if isinstance(command, click.Group):
            out += _commands(command, path)
    return out


COMMANDS = _commands(cli)


def _flat(text: str) -> str:
    """Help text with its line wrapping undone."""
    return " ".join(text.split())


def _summary(command: click.Command) -> str:
    """The first sentence of the command's docstring (what it does)."""
    help_text = (command.help or "").split("\f")[0].strip()
    first_paragraph = help_text.split("\n\n")[0]
    return _flat(first_paragraph)


def _help(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="corridorhub", terminal_width=100)
    assert result.exit_code == 0, f"corridorhub {' '.join(args)} --help: {result.output}{result.exception!r}"
    return result.output


def test_the_cli_has_the_subcommands_of_the_design() -> None:
    names = {path[0] for path, _ in COMMANDS}
    assert {"demo", "simulate", "ingest", "sql", "compact"} <= names


def test_top_level_help_lists_every_subcommand_with_what_it_does() -> None:
    output = _help()
    assert output.startswith("Usage: corridorhub")
    assert "Haneda-Kamata" in output
    for name in ("--config", "--log-level", "--version", "--help"):
        assert name in output
    commands_section = output.split("Commands:", 1)[1]
    for name, command in cli.commands.items():
        line = next((ln for ln in commands_section.splitlines() if ln.split()[:1] == [name]), None)
        assert line is not None, f"{name} missing from the command list"
        assert len(line.split()) > 2, f"{name} has no one-line description in the command list"
        assert not command.hidden


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_each_subcommand_help_says_what_it_does_and_lists_its_options(
    path: tuple[str, ...], command: click.Command
) -> None:
    output = _help(*path)
    assert output.startswith(f"Usage: corridorhub {' '.join(path)}")

    summary = _summary(command)
    assert len(summary.split()) >= 4, f"{' '.join(path)}: the docstring does not say what the command does"
    assert summary in _flat(output)

    for param in command.params:
        if isinstance(param, click.Option):
            if param.hidden:
                continue
            for opt in (*param.opts, *param.secondary_opts):
                assert opt in output, f"{' '.join(path)} --help does not list {opt}"
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"
        elif isinstance(param, click.Argument):
            assert param.make_metavar(click.Context(command)) in output.splitlines()[0]

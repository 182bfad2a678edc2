"""``corridorhub keys``: create, list and revoke the HTTP API's keys (stored only as hashes)."""

from __future__ import annotations

import click

from corridorhub._options import lake_option, settings_from
from store.errors import LakeError
from store.keys import ROLES, KeyStore
from store.lake import NO_LAKE_HINT, Lake

_keys_file_option = click.option(
    "--keys-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="API keys file [default: {lake}/_hub/keys.json].",
)


def _store(ctx: click.Context, lake: str | None, keys_file: str | None) -> KeyStore:
    return KeyStore(settings_from(ctx, lake=lake, keys_file=keys_file).keys_path)


def _store_to_change(ctx: click.Context, lake: str | None, keys_file: str | None) -> KeyStore:
    """The key store, refusing to make a lake folder for it: the keys live in the lake unless a keys file
    is given, and a mistyped --lake must not quietly become a new, empty lake that ``serve`` never reads."""
    settings = settings_from(ctx, lake=lake, keys_file=keys_file)
    target = Lake(settings.lake)
    if settings.keys_file is None and not target.exists():
        raise LakeError(
            f"No lake at {target.root}, where the API keys are kept ({settings.keys_path}): {NO_LAKE_HINT}; "
            "or keep the keys elsewhere with --keys-file"
        )
    return KeyStore(settings.keys_path)


@click.group("keys")
def command() -> None:
    """Create, list and revoke API keys for the HTTP service.

    Roles: analyst (SQL over the lake, tables), operator (analyst plus ingest status, devices,
    compaction).  Clients send a key as "Authorization: Bearer <key>".  Only a hash of each key is stored.
    """


@command.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the key may do.")
@click.option("--name", required=True, help="Who or what holds the key (unique among active keys).")
@lake_option
@_keys_file_option
@click.pass_context
def create(ctx: click.Context, role: str, name: str, lake: str | None, keys_file: str | None) -> None:
    """Create a key and print it once: it cannot be shown again."""
    store = _store_to_change(ctx, lake, keys_file)
    key = store.create(role, name)
    click.echo(key)
    click.echo(
        f"Created {role} key {name!r} in {store.path}. Copy it now: it cannot be shown again "
        "(only its hash is stored).",
        err=True,
    )


@command.command("list")
@lake_option
@_keys_file_option
@click.pass_context
def list_keys(ctx: click.Context, lake: str | None, keys_file: str | None) -> None:
    """List the keys as a table: id, name, role, created, revoked (never the key)."""
    infos = _store(ctx, lake, keys_file).list()
    header = ("id", "name", "role", "created_at", "revoked_at")
    rows = [(i.id, i.name, i.role, i.created_at, i.revoked_at or "") for i in infos]
    widths = [max([len(h), *(len(r[n]) for r in rows)]) for n, h in enumerate(header)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    click.echo(f"({len(rows)} key{'s' if len(rows) != 1 else ''})")


@command.command("revoke")
@click.argument("id_or_name")
@lake_option
@_keys_file_option
@click.pass_context
def revoke(ctx: click.Context, id_or_name: str, lake: str | None, keys_file: str | None) -> None:
    """Revoke a key by its id or name; requests with it are refused from then on."""
    info = _store_to_change(ctx, lake, keys_file).revoke(id_or_name)
    click.echo(f"Revoked {info.role} key {info.name!r} (id {info.id}) at {info.revoked_at}.")

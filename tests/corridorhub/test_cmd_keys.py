"""``corridorhub keys``: create prints the key once, list never shows it, revoke stops it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from corridorhub.cli import cli
from store.keys import KeyStore
from store.lake import Lake


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), prog_name="corridorhub")
    return result.exit_code, result.stdout, result.stderr


def test_create_prints_the_key_once_and_list_never_shows_it(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    Lake(lake).ensure_tables()
    code, out, err = _run("keys", "create", "--role", "analyst", "--name", "ward", "--lake", lake)
    assert code == 0, err
    key = out.strip()
    assert key.startswith("chk_") and len(out.splitlines()) == 1
    assert "cannot be shown again" in err
    assert KeyStore(tmp_path / "lake" / "_hub" / "keys.json").authenticate(key) is not None

    code, out, err = _run("keys", "list", "--lake", lake)
    assert code == 0, err
    assert "ward" in out and "analyst" in out and "(1 key)" in out
    assert key not in out and key.rsplit("_", 1)[-1] not in out


def test_revoke_by_name_and_errors_are_one_line(tmp_path: Path) -> None:
    keys_file = str(tmp_path / "k.json")
    code, out, _ = _run("keys", "create", "--role", "operator", "--name", "ops", "--keys-file", keys_file)
    key = out.strip()
    code, out, err = _run("keys", "revoke", "ops", "--keys-file", keys_file)
    assert code == 0, err
    assert "Revoked operator key 'ops'" in out
    assert KeyStore(Path(keys_file)).authenticate(key) is None

    code, out, err = _run("keys", "revoke", "ops", "--keys-file", keys_file)
    assert code == 1
    assert err.strip().splitlines() == ["Error: The key 'ops' is revoked already"]

    code, _, err = _run("keys", "create", "--role", "admin", "--name", "x", "--keys-file", keys_file)
    assert code == 2 and "admin" in err


def test_create_refuses_a_path_without_a_lake_and_says_how_one_is_made(tmp_path: Path) -> None:
    typo = tmp_path / "data" / "lak"
    for args in (["create", "--role", "analyst", "--name", "ward"], ["revoke", "ward"]):
        code, out, err = _run("keys", *args, "--lake", str(typo))
        assert code == 1 and out == ""
        [line] = err.strip().splitlines()
        assert line.startswith(f"Error: No lake at {typo}, where the API keys are kept")
        assert "`corridorhub ingest` creates the lake when it starts" in line and "--keys-file" in line
    assert not (tmp_path / "data").exists()  # nothing made on the way

"""Settings at the edge: precedence (flag > CORRIDORHUB_* env > corridorhub.toml > default), hostile input
failing by name, secrets masked, and the CLI turning every ConfigError into one ``Error: ...`` line.

``load_settings`` takes explicit dicts for flags and environment, so nothing here touches ``os.environ``
(the CLI tests pass ``env=`` to click's CliRunner, which restores it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corridorhub.cli import cli
from corridorhub.config import load_settings
from store.errors import ConfigError
from store.settings import BrokerAddress, Settings

SECRET = "s3cr3t-Haneda-pw"


def _toml(tmp_path: Path, text: str, name: str = "corridorhub.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _fails(match: str | None, **kwargs: Any) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        load_settings(**{"flags": {}, "environ": {}, **kwargs})
    return str(info.value)


# -- precedence ---------------------------------------------------------------------------------


def test_defaults_when_nothing_is_given(tmp_path: Path) -> None:
    settings = load_settings({}, {}, _toml(tmp_path, ""))
    assert settings == Settings()
    assert settings.lake == Path("data/lake") and settings.releases == Path("data/releases")
    assert settings.mqtt_version == "5" and settings.session_expiry_s > 0


def test_flag_beats_env_beats_toml_beats_default(tmp_path: Path) -> None:
    config = _toml(
        tmp_path,
        "[corridorhub]\n"
        'broker = "mqtt://toml-host:1001"\n'
        "flush_messages = 111\n"
        'client_id = "from-toml"\n'
        'lake = "toml-lake"\n',
    )
    environ = {
        "CORRIDORHUB_BROKER": "mqtt://env-host:2002",
        "CORRIDORHUB_FLUSH_MESSAGES": "222",
        "UNRELATED": "x",
    }
    flags = {"broker": "mqtt://flag-host:3003", "group": None}  # None: the flag was not given
    settings = load_settings(flags, environ, config)
    assert settings.broker == "mqtt://flag-host:3003"  # flag over env and toml
    assert settings.flush_messages == 222  # env over toml
    assert settings.client_id == "from-toml"  # toml over default
    assert settings.lake == Path("toml-lake")
    assert settings.group is None  # default
    assert settings.flush_interval_s == Settings().flush_interval_s


def test_top_level_keys_work_without_a_section(tmp_path: Path) -> None:
    settings = load_settings({}, {}, _toml(tmp_path, 'topic = "corridor/acme/+/state"\nflush_bytes = 4096\n'))
    assert settings.topic == "corridor/acme/+/state" and settings.flush_bytes == 4096


def test_env_names_the_config_file_and_values_are_coerced(tmp_path: Path) -> None:
    config = _toml(tmp_path, "flush_interval_s = 2\nmax_payload_bytes = 65_536\n", name="other.toml")
    environ = {"CORRIDORHUB_CONFIG": str(config), "CORRIDORHUB_SESSION_EXPIRY_S": "3_600"}
    settings = load_settings({}, environ)
    assert settings.flush_interval_s == 2.0 and isinstance(settings.flush_interval_s, float)
    assert settings.max_payload_bytes == 65_536
    assert settings.session_expiry_s == 3600


# -- hostile input: each fails with a ConfigError naming the setting ----------------------------------


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    config = _toml(tmp_path, "lake = \n[corridorhub")
    message = _fails("not valid TOML", config_file=config)
    assert str(config) in message


@pytest.mark.parametrize(
    "text,name",
    [
        ('laek = "typo"\n', "'laek'"),
        ('[corridorhub]\nbrokr = "mqtt://h:1"\n', "'brokr'"),
        ('lake = "x"\n[corridorhub]\nbroker = "mqtt://h:1"\n', "'lake'"),  # above the section: ignored?
        ("corridorhub = 5\n", "[corridorhub]"),
    ],
)
def test_unknown_or_misplaced_keys_in_the_toml_fail_by_name(tmp_path: Path, text: str, name: str) -> None:
    assert name in _fails(None, config_file=_toml(tmp_path, text))


def test_an_unknown_flag_fails_by_name() -> None:
    assert "'flush_intervall'" in _fails("Unknown setting", flags={"flush_intervall": 1})


@pytest.mark.parametrize(
    "name,toml_value",
    [
        ("flush_messages", '"many"'),  # string for an int
        ("flush_messages", "true"),  # bool for an int
        ("flush_messages", "2.5"),
        ("flush_messages", "[1, 2]"),
        ("flush_messages", "-5"),  # negative
        ("flush_messages", "9223372036854775807"),  # huge
        ("buffer_bytes", "0"),
        ("receive_maximum", "65536"),
        ("session_expiry_s", "0"),  # 0 keeps no session: everything in flight lost on reconnect
        ("session_expiry_s", "4294967296"),
        ("flush_interval_s", "0"),
        ("flush_interval_s", "-1.0"),
        ("flush_interval_s", "inf"),
        ("flush_interval_s", "nan"),
        ("flush_interval_s", "[1]"),  # a TOML array for a float
        ("flush_interval_s", "{ seconds = 1 }"),  # a TOML table for a float
        ("flush_interval_s", "2024-01-01"),  # a TOML date for a float
        ("flush_interval_s", "true"),
        ("status_interval_s", "0"),
        ("lake", "5"),  # a number is no folder
        ("lake", "{ path = 'x' }"),
        ("lake", '""'),  # "" would silently be the current folder
        ("ca_file", "[]"),
        ("mqtt_version", '"3"'),
        ("mqtt_version", "true"),
        ("log_level", '"LOUD"'),
        ("client_id", '""'),
        ("client_id", '"a\\u0000b"'),
        ("topic", '"corridor/#/state"'),
        ("topic", '"corridor/op+/x/state"'),
        ("topic", '""'),
        ("topic", '"$share/g/corridor/+/+/+"'),
        ("max_payload_bytes", "10"),
    ],
)
def test_wrong_values_in_the_toml_fail_by_name(tmp_path: Path, name: str, toml_value: str) -> None:
    _fails(f"'{name}'", config_file=_toml(tmp_path, f"[corridorhub]\n{name} = {toml_value}\n"))


@pytest.mark.parametrize(
    "name,value",
    [
        ("FLUSH_INTERVAL_S", "soon"),
        ("FLUSH_INTERVAL_S", "0"),
        ("FLUSH_INTERVAL_S", "1e999"),
        ("FLUSH_MESSAGES", "5e3"),
        ("FLUSH_MESSAGES", "9" * 400),
        ("BUFFER_BYTES", "-1"),
        ("RECEIVE_MAXIMUM", "0x10"),
        ("LAKE", ""),
        ("GROUP", ""),
        ("GROUP", "a/b"),
        ("LOG_LEVEL", "verbose"),
    ],
)
def test_wrong_values_in_the_environment_fail_by_name(name: str, value: str) -> None:
    _fails(f"'{name.lower()}'", environ={f"CORRIDORHUB_{name}": value})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1883",  # bad scheme
        "tcp://broker:1883",
        "127.0.0.1:1883",  # no scheme
        "",
        "mqtt://",  # no host
        "mqtt://:1883",
        "mqtt://broker:99999",  # bad port
        "mqtt://broker:0",
        "mqtt://broker:-1",
        "mqtt://broker:port",
        "mqtt://broker:1883/corridor",  # path
        "mqtt://broker:1883?tls=1",  # query
        "mqtt://broker:1883#frag",
        "mqtt://bro ker:1883",  # whitespace
        "mqtt://broker\n:1883",
    ],
)
def test_bad_broker_urls_fail_by_name(url: str) -> None:
    _fails("'broker'", flags={"broker": url})


@pytest.mark.parametrize("group", ["a/b", "hub#", "+", "g+", "", "x" * 65, "grüppe", "a b"])
def test_groups_that_would_break_the_shared_subscription_fail_by_name(group: str) -> None:
    _fails("'group'", flags={"group": group})


def test_good_broker_urls_parse() -> None:
    assert BrokerAddress.parse("mqtt://broker") == BrokerAddress("broker", 1883)
    assert BrokerAddress.parse("mqtts://broker/") == BrokerAddress("broker", 8883, tls=True)
    address = BrokerAddress.parse("mqtt://hub%40ota:p%3Ass@[::1]:1884")
    assert (address.host, address.port, address.username, address.password) == (
        "::1",
        1884,
        "hub@ota",
        "p:ss",
    )


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_config_file_that_is_missing_or_a_directory_fails_by_name(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nope.toml" if kind == "missing" else tmp_path
    message = _fails("Config file", config_file=path)
    assert str(path) in message and "cannot be read" in message
    message = _fails("Config file", environ={"CORRIDORHUB_CONFIG": str(path)})
    assert str(path) in message


# -- secrets -----------------------------------------------------------------------------------------


def test_secrets_print_as_stars_in_describe_and_repr(tmp_path: Path) -> None:
    from_flags = load_settings({"mqtt_password": SECRET, "mqtt_username": "hub"}, {}, _toml(tmp_path, ""))
    from_url = load_settings({"broker": f"mqtts://hub:{SECRET}@broker.example:8883"}, {}, None)
    for settings in (from_flags, from_url):
        shown = [repr(settings), str(settings), *settings.describe().values(), str(settings.broker_address)]
        shown.append(repr(settings.broker_address))
        assert not [s for s in shown if SECRET in s], "a secret printed in clear"
        assert "***" in repr(settings)
    assert from_flags.describe()["mqtt_password"] == "***"
    assert from_url.describe()["broker"] == "mqtts://hub:***@broker.example:8883"
    # The secret is still there for the client to use.
    assert from_flags.broker_address.password == SECRET and from_url.broker_address.password == SECRET


def test_settings_password_overrides_the_urls(tmp_path: Path) -> None:
    settings = load_settings(
        {"broker": "mqtt://url-user:url-pass@h:1883"}, {"CORRIDORHUB_MQTT_PASSWORD": SECRET}, None
    )
    assert settings.broker_address.username == "url-user"
    assert settings.broker_address.password == SECRET


@pytest.mark.parametrize(
    "url",
    [
        f"mqtt://hub:{SECRET}@broker:1883/path",
        f"mqtt://hub:{SECRET}@broker:1883?q=1",
        f"http://hub:{SECRET}@broker:1883",
        f"mqtt://hub:{SECRET}@bro ker:1883",
    ],
)
def test_errors_about_the_broker_url_do_not_echo_the_password(url: str) -> None:
    message = _fails("'broker'", flags={"broker": url})
    assert SECRET not in message and "hub:***@" in message


def test_a_bad_password_value_is_not_echoed(tmp_path: Path) -> None:
    message = _fails("'mqtt_password'", config_file=_toml(tmp_path, 'mqtt_password = ["' + SECRET + '"]\n'))
    assert SECRET not in message


# -- the CLI edge: one clean line, non-zero exit ----------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the CLI from an empty folder: no ./corridorhub.toml, and a lake it may not create."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env=env, prog_name="corridorhub")
    assert not isinstance(result.exception, ConfigError | ValueError | TypeError), "escaped as a traceback"
    return result.exit_code, result.output


def _one_error_line(output: str, *words: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, output
    assert "Traceback" not in output
    for word in words:
        assert word in errors[0], output


@pytest.mark.parametrize(
    "broker",
    ["http://127.0.0.1:1883", "mqtt://127.0.0.1:99999", f"mqtt://hub:{SECRET}@127.0.0.1:1883/x"],
)
def test_cli_prints_one_error_line_for_a_bad_broker(in_tmp: Path, broker: str) -> None:
    code, output = _cli(["ingest", "--broker", broker, "--lake", "lake"])
    assert code != 0
    _one_error_line(output, "'broker'")
    assert SECRET not in output
    assert not (in_tmp / "lake").exists()


@pytest.mark.parametrize("value", ["soon", "0", "-3"])
def test_cli_prints_one_error_line_for_a_bad_env_value(in_tmp: Path, value: str) -> None:
    env = {"CORRIDORHUB_FLUSH_INTERVAL_S": value}
    code, output = _cli(["sql", "SELECT 1"], env=env)
    assert code != 0
    _one_error_line(output, "'flush_interval_s'")
    code, output = _cli(["ingest", "--broker", "mqtt://127.0.0.1:1"], env=env)
    assert code != 0
    _one_error_line(output, "'flush_interval_s'")


def test_cli_prints_one_error_line_for_a_bad_log_level_and_a_bad_config_file(in_tmp: Path) -> None:
    code, output = _cli(["--log-level", "LOUD", "sql", "SELECT 1"])
    assert code != 0
    _one_error_line(output, "'log_level'")
    bad = _toml(in_tmp, "flush_interval_s = 'often'\n", name="bad.toml")
    code, output = _cli(["--config", str(bad), "sql", "SELECT 1"])
    assert code != 0
    _one_error_line(output, "'flush_interval_s'", str(bad))
    code, output = _cli(["sql", "SELECT 1"], env={"CORRIDORHUB_CONFIG": str(in_tmp / "gone.toml")})
    assert code != 0
    _one_error_line(output, "gone.toml")

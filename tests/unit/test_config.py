"""Settings: MQTT URL parsing, precedence flags > environment > TOML > defaults, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from att_jm.config import (
    SETTING_NAMES,
    ConfigError,
    MqttEndpoint,
    Settings,
    load_settings,
    parse_mqtt_url,
    redact_url,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", MqttEndpoint("127.0.0.1", 1883, None, None, False)),
        ("mqtt://broker", MqttEndpoint("broker", 1883, None, None, False)),
        ("mqtts://broker", MqttEndpoint("broker", 8883, None, None, True)),
        ("MQTTS://broker:9000/", MqttEndpoint("broker", 9000, None, None, True)),
        ("mqtt://alice:s3cret@broker:1884", MqttEndpoint("broker", 1884, "alice", "s3cret", False)),
        ("mqtt://alice@broker", MqttEndpoint("broker", 1883, "alice", None, False)),
        ("mqtt://al%40ce:p%3Aw%2Fd%40@h:1", MqttEndpoint("h", 1, "al@ce", "p:w/d@", False)),
        ("mqtt://bob:@h", MqttEndpoint("h", 1883, "bob", "", False)),
        ("mqtt://[::1]:1883", MqttEndpoint("::1", 1883, None, None, False)),
    ],
)
def test_mqtt_urls_parse_into_endpoints(url: str, expected: MqttEndpoint) -> None:
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://broker:1883", "must start with mqtt:// or mqtts://"),
        ("broker:1883", "must start with mqtt:// or mqtts://"),
        ("", "must start with mqtt://"),
        ("mqtt://", "has no host"),
        ("mqtt://:1883", "has no host"),
        ("mqtt://broker:notaport", "not a valid URL"),
        ("mqtt://broker:70000", "not a valid URL"),
        ("mqtt://broker:0", "port must be 1..65535"),
        ("mqtt://broker:1883/path", "must not have a path"),
        ("mqtt://broker?x=1", "must not have a path, query or fragment"),
        ("mqtt://:pw@broker", "empty user name"),
    ],
)
def test_bad_mqtt_urls_are_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_mqtt_url(url)


def test_errors_about_a_url_never_show_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_mqtt_url("mqtt://alice:topsecret@broker:99999")
    assert "topsecret" not in str(caught.value)
    assert "alice:***@broker" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mqtt://a:b@h:1", "mqtt://a:***@h:1"),
        ("mqtt://a@h", "mqtt://a@h"),
        ("mqtt://h:1", "mqtt://h:1"),
        ("nonsense", "nonsense"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_defaults_work_against_a_local_broker() -> None:
    settings = load_settings({}, {}, None)
    assert settings == Settings()
    assert settings.mqtt == MqttEndpoint("127.0.0.1", 1883, None, None, False)
    assert settings.store == "./var/att-jm.db"
    assert settings.views_path() == "./var/att-jm.views.db"


@pytest.mark.parametrize(
    ("store", "views_db", "expected"),
    [
        ("./var/att-jm.db", None, "./var/att-jm.views.db"),
        ("/data/jm.sqlite", None, "/data/jm.views.db"),
        ("/data/store", None, "/data/store.views.db"),
        ("/data/jm.db", "/elsewhere/v.db", "/elsewhere/v.db"),
    ],
)
def test_views_path_follows_the_store_unless_given(
    store: str, views_db: str | None, expected: str
) -> None:
    assert Settings(store=store, views_db=views_db).views_path() == expected


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "att-jm.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_flags_beat_environment_beat_toml_beat_defaults(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path,
        'store = "/toml/store.db"\nscripts = "/toml/scripts"\nclient_id = "toml-id"\n'
        "view_rows = 10\n",
    )
    environ = {"ATT_JM_SCRIPTS": "/env/scripts", "ATT_JM_CLIENT_ID": "env-id"}
    flags: dict[str, object] = {"client_id": "flag-id", "store": None}
    settings = load_settings(flags, environ, config)
    assert settings.client_id == "flag-id"
    assert settings.scripts == "/env/scripts"
    assert settings.store == "/toml/store.db"
    assert settings.view_rows == 10
    assert settings.topic_prefix == "att"


def test_the_toml_path_can_come_from_att_jm_config(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'topic_prefix = "site/a"\n')
    assert load_settings({}, {"ATT_JM_CONFIG": config}, None).topic_prefix == "site/a"


def test_the_config_flag_beats_att_jm_config(tmp_path: Path) -> None:
    chosen = write_toml(tmp_path, 'topic_prefix = "chosen"\n')
    environ = {"ATT_JM_CONFIG": str(tmp_path / "missing.toml")}
    assert load_settings({}, environ, chosen).topic_prefix == "chosen"


def test_toml_accepts_environment_style_keys(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'ATT_JM_MQTT_URL = "mqtts://b:9"\nATT_JM_VIEW_ROWS = 5\n')
    settings = load_settings({}, {}, config)
    assert settings.mqtt == MqttEndpoint("b", 9, None, None, True)
    assert settings.view_rows == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('mqtt_uri = "mqtt://x"\n', "unknown key 'mqtt_uri'"),
        ('[service]\nstore = "x"\n', "unknown key 'service'"),
        ('store = "a"\nATT_JM_STORE = "b"\n', "store is given twice"),
        ("store = \n", "not valid TOML"),
        ("view_rows = true\n", "view_rows must be an integer"),
        ("view_rows = 1.5\n", "view_rows must be an integer"),
        ('view_rows = "many"\n', "view_rows must be an integer"),
        ("store = 3\n", "store must be a non-empty string"),
    ],
)
def test_bad_toml_files_are_refused_naming_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({}, {}, write_toml(tmp_path, text))


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings({}, {}, str(tmp_path / "nope.toml"))


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("max_payload_bytes", "1024", 1024),
        ("max_payload_bytes", " 2048 ", 2048),
        ("view_rows", "7", 7),
        ("session_expiry_seconds", "60", 60),
        ("seal_every_seconds", "2.5", 2.5),
        ("seal_every_seconds", "3", 3.0),
        ("log_format", "JSON", "json"),
        ("log_format", "console", "console"),
        ("log_format", "auto", None),
        ("views_db", "/v.db", "/v.db"),
        ("mqtt_url", "mqtt://u:p@h:2", "mqtt://u:p@h:2"),
    ],
)
def test_environment_strings_are_converted_to_the_setting_type(
    name: str, text: str, expected: object
) -> None:
    settings = load_settings({}, {"ATT_JM_" + name.upper(): text}, None)
    assert getattr(settings, name) == expected


def test_empty_environment_values_count_as_unset() -> None:
    assert load_settings({}, {"ATT_JM_STORE": "", "ATT_JM_LOG_FORMAT": ""}, None) == Settings()


def test_flags_given_as_strings_are_converted_like_the_environment() -> None:
    settings = load_settings({"max_payload_bytes": "4096", "log_format": "console"}, {}, None)
    assert (settings.max_payload_bytes, settings.log_format) == (4096, "console")


def test_every_setting_has_an_environment_variable() -> None:
    assert set(SETTING_NAMES) == {
        "mqtt_url", "store", "scripts", "topic_prefix", "client_id", "log_format",
        "max_payload_bytes", "view_rows", "view_max_bytes", "session_expiry_seconds", "views_db",
        "seal_every_events", "seal_every_seconds", "max_batch", "mqtt_username",
        "mqtt_password_file", "secrets_dir", "tls_ca_file", "tls_cert_file", "tls_key_file",
        "users_file", "script_user", "command_rate", "command_burst", "mqtt_fast_paths",
        "instance", "takeover_seconds", "compact_states", "relay_nice",
        "archive_dir",
    }


def test_the_archive_dir_defaults_next_to_an_sqlite_store() -> None:
    settings = load_settings({"store": "/srv/att/var/jm.db"}, {}, None)
    assert settings.archive_directory() == "/srv/att/var/archives"
    given = load_settings({}, {"ATT_JM_ARCHIVE_DIR": "/backup/att"}, None)
    assert given.archive_directory() == "/backup/att"


def test_a_postgres_store_has_no_default_archive_dir() -> None:
    url = "postgresql://jm@db/att"
    assert load_settings({"store": url}, {}, None).archive_directory() is None
    assert load_settings({"store": url, "archive_dir": "/a"}, {}, None).archive_directory() == "/a"


@pytest.mark.parametrize("value", ["", "x\x00y", "a" * 4097])
def test_a_bad_archive_dir_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="archive_dir"):
        load_settings({"archive_dir": value}, {}, None)


@pytest.mark.parametrize(("text", "nice"), [("0", 0), ("10", 10), (None, 19)])
def test_the_relay_niceness_is_a_setting(text: str | None, nice: int) -> None:
    environ = {} if text is None else {"ATT_JM_RELAY_NICE": text}
    assert load_settings({}, environ, None).relay_nice == nice


@pytest.mark.parametrize("text", ["-1", "20", "1.5", "x"])
def test_a_relay_niceness_outside_0_to_19_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="relay_nice"):
        load_settings({}, {"ATT_JM_RELAY_NICE": text}, None)


@pytest.mark.parametrize("value", ["", "a/b", "a+", "#", "x" * 65, "é"])
def test_an_instance_name_is_a_topic_level_and_a_client_id_end(value: str) -> None:
    with pytest.raises(ConfigError, match="instance must be 1 to 64 of"):
        load_settings({}, {"ATT_JM_INSTANCE": value or " "}, None)


def test_instance_and_takeover_seconds() -> None:
    settings = load_settings({}, {"ATT_JM_INSTANCE": "jm-a.host_1",
                                  "ATT_JM_TAKEOVER_SECONDS": "4.5"}, None)
    assert (settings.instance, settings.takeover_seconds) == ("jm-a.host_1", 4.5)
    assert Settings().instance is None and Settings().takeover_seconds == 10.0
    with pytest.raises(ConfigError, match="takeover_seconds must be a number from 2 to 3600"):
        load_settings({}, {"ATT_JM_TAKEOVER_SECONDS": "1"}, None)


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("FALSE", False), ("1", True), ("0", False), ("yes", True), ("off", False),
])
def test_the_fast_paths_switch_reads_the_usual_words(text: str, value: bool) -> None:
    settings = load_settings({}, {"ATT_JM_MQTT_FAST_PATHS": text}, None)
    assert settings.mqtt_fast_paths is value


def test_compact_states_is_off_unless_asked_for(tmp_path: Path) -> None:
    assert Settings().compact_states is False
    assert load_settings({}, {"ATT_JM_COMPACT_STATES": "on"}, None).compact_states is True
    assert load_settings({"compact_states": "false"}, {"ATT_JM_COMPACT_STATES": "true"},
                         None).compact_states is False
    config = tmp_path / "att-jm.toml"
    config.write_text("compact_states = true\n", encoding="utf-8")
    assert load_settings({}, {}, str(config)).compact_states is True
    with pytest.raises(ConfigError, match="compact_states must be true or false"):
        load_settings({}, {"ATT_JM_COMPACT_STATES": "zstd"}, None)


@pytest.mark.parametrize("text", ["maybe", "2", "ja"])
def test_the_fast_paths_switch_refuses_anything_else(text: str) -> None:
    with pytest.raises(ConfigError, match="mqtt_fast_paths must be true or false"):
        load_settings({}, {"ATT_JM_MQTT_FAST_PATHS": text}, None)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ATT_JM_MAX_PAYLOAD_BYTES": "big"}, "max_payload_bytes must be an integer"),
        ({"ATT_JM_MAX_PAYLOAD_BYTES": "0"}, "max_payload_bytes must be an integer from 1"),
        ({"ATT_JM_VIEW_ROWS": "-1"}, "view_rows must be an integer from 1"),
        ({"ATT_JM_SESSION_EXPIRY_SECONDS": "4294967296"}, "session_expiry_seconds"),
        ({"ATT_JM_SEAL_EVERY_SECONDS": "0"}, "seal_every_seconds must be a number from 0.1 to "
                                             "86400"),
        ({"ATT_JM_SEAL_EVERY_SECONDS": "1e400"}, "seal_every_seconds must be a number from"),
        ({"ATT_JM_SEAL_EVERY_SECONDS": "nan"}, "seal_every_seconds must be a number from"),
        ({"ATT_JM_SEAL_EVERY_EVENTS": "10001"}, "seal_every_events must be an integer from 1 to "
                                                "10000"),
        ({"ATT_JM_MAX_PAYLOAD_BYTES": "268435455"}, "from 1024 to 1048576"),
        ({"ATT_JM_VIEW_ROWS": "10001"}, "view_rows must be an integer from 1 to 10000"),
        ({"ATT_JM_VIEW_MAX_BYTES": "1000"}, "view_max_bytes must be an integer from 65536"),
        ({"ATT_JM_MAX_BATCH": "100000"}, "max_batch must be an integer from 1 to 10000"),
        ({"ATT_JM_CLIENT_ID": "c" * 129}, "client_id must be at most 128 characters"),
        ({"ATT_JM_SEAL_EVERY_SECONDS": "soon"}, "seal_every_seconds must be a number"),
        ({"ATT_JM_LOG_FORMAT": "xml"}, "log_format must be one of json, console"),
        ({"ATT_JM_MQTT_URL": "tcp://h"}, "mqtt://"),
        ({"ATT_JM_TOPIC_PREFIX": "a/+/b"}, "wildcards"),
        ({"ATT_JM_TOPIC_PREFIX": "a#"}, "wildcards"),
        ({"ATT_JM_TOPIC_PREFIX": "/att"}, "must not start or end with '/'"),
        ({"ATT_JM_TOPIC_PREFIX": "att/"}, "must not start or end with '/'"),
        ({"ATT_JM_TOPIC_PREFIX": "a//b"}, "empty levels"),
        ({"ATT_JM_TOPIC_PREFIX": "$SYS"}, "reserved"),
        ({"ATT_JM_TOPIC_PREFIX": "a\x00b"}, "NUL"),
    ],
)
def test_invalid_environment_values_are_refused_clearly(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({}, environ, None)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"client_id": ""}, "client_id must be a non-empty string"),
        ({"topic_prefix": ""}, "topic_prefix must be a non-empty string"),
        ({"store": ""}, "store must be a non-empty string"),
        ({"views_db": ""}, "views_db must be a non-empty string"),
        ({"view_rows": True}, "view_rows must be an integer"),
        ({"max_payload_bytes": 300_000_000}, "max_payload_bytes must be an integer from 1"),
        ({"colour": "red"}, "unknown setting 'colour'"),
    ],
)
def test_invalid_flags_are_refused_clearly(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(flags, {}, None)


def test_settings_built_directly_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="topic_prefix"):
        Settings(topic_prefix="a/#")

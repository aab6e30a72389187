"""Worker settings from the environment: Kafka TLS/SASL passed through to every client, checked early."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import faust
import pytest
from faust.types.auth import AuthProtocol

from pantau.stream.app import ChangelogProducer, create_app
from pantau.stream.metrics import Metrics, expected_tps
from pantau.stream.settings import Settings


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A self-signed CA and client certificate, as an operator would mount them."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "client.key", folder / "client.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=pantau-test"], check=True, capture_output=True)  # fmt: skip
    return {"PANTAU_SSL_CAFILE": str(cert), "PANTAU_SSL_CERTFILE": str(cert), "PANTAU_SSL_KEYFILE": str(key)}


def settings_from(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def test_plaintext_adds_no_options(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(monkeypatch)
    assert settings.kafka_options() == {} and settings.aiokafka_options() == {}
    assert settings.faust_credentials() is None and settings.ssl_context() is None
    assert create_app(settings).conf.broker_credentials is None


def test_sasl_ssl_reaches_faust_aiokafka_and_kafka_python(monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, str]) -> None:
    settings = settings_from(monkeypatch, PANTAU_SECURITY_PROTOCOL="SASL_SSL", PANTAU_SASL_MECHANISM="SCRAM-SHA-512",
                             PANTAU_SASL_USERNAME="pantau", PANTAU_SASL_PASSWORD="rahasia", **tls_files)  # fmt: skip
    credentials = create_app(settings).conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol == AuthProtocol.SASL_SSL and credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("pantau", "rahasia")
    assert isinstance(credentials.ssl_context, ssl.SSLContext) and credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    changelog = ChangelogProducer(settings.bootstrap, 1, 1 << 20, security=settings.aiokafka_options())
    assert changelog.options["security_protocol"] == "SASL_SSL" and changelog.options["sasl_plain_username"] == "pantau"
    assert isinstance(changelog.options["ssl_context"], ssl.SSLContext)
    assert settings.kafka_options() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "pantau",
        "sasl_plain_password": "rahasia", "ssl_cafile": tls_files["PANTAU_SSL_CAFILE"],
        "ssl_certfile": tls_files["PANTAU_SSL_CERTFILE"], "ssl_keyfile": tls_files["PANTAU_SSL_KEYFILE"],
    }  # fmt: skip
    assert "rahasia" not in repr(settings)


def test_kafka_python_accepts_the_options(monkeypatch: pytest.MonkeyPatch, tls_files: dict[str, str]) -> None:
    from kafka import KafkaProducer

    settings = settings_from(monkeypatch, PANTAU_SECURITY_PROTOCOL="SSL", **tls_files)
    unknown = set(settings.kafka_options()) - set(KafkaProducer.DEFAULT_CONFIG)
    assert not unknown, f"kafka-python does not know {unknown}"
    assert isinstance(create_app(settings).conf.broker_credentials, faust.SSLCredentials)


@pytest.mark.parametrize(("env", "message"), [
    ({"PANTAU_SECURITY_PROTOCOL": "TLS"}, "PANTAU_SECURITY_PROTOCOL"),
    ({"PANTAU_SECURITY_PROTOCOL": "SASL_SSL", "PANTAU_SASL_USERNAME": "pantau"}, "PANTAU_SASL_PASSWORD"),
    ({"PANTAU_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "PANTAU_SASL_MECHANISM": "GSSAPI", "PANTAU_SASL_USERNAME": "a",
      "PANTAU_SASL_PASSWORD": "b"}, "PANTAU_SASL_MECHANISM"),
    ({"PANTAU_SECURITY_PROTOCOL": "SSL", "PANTAU_SSL_CAFILE": "/nonexistent/ca.pem"}, "no such file"),
    ({"PANTAU_SSL_KEYFILE": "/etc/hostname"}, "PANTAU_SSL_CERTFILE"),
])  # fmt: skip
def test_a_configuration_that_cannot_work_is_refused_at_start(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from(monkeypatch, **env)


def test_expected_tps_is_the_2024_registry_or_the_operators_file(tmp_path: Path) -> None:
    shipped = expected_tps()
    assert sum(shipped.values()) == 823_366 and shipped["33"] == 117_299 and len(shipped) == 39
    custom = tmp_path / "pilkada.json"
    custom.write_text('{"tps": {"34": 10}}')
    metrics = Metrics(expected=expected_tps(custom))
    assert metrics.registry.get_sample_value("pantau_tps_expected", {"provinsi": "34"}) == 10
    assert metrics.registry.get_sample_value("pantau_tps_expected", {"provinsi": "33"}) is None

"""Operations options of the standalone service: HTTPS straight from gunicorn (``--certfile`` /
``--keyfile``) with a self-signed certificate made here, and ``--log-format json``."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from urllib3.exceptions import InsecureRequestWarning

from flask_impulse import RealtimeClient, ServerClient, ServerClientError
from flask_impulse.testing import LiveImpulse
from tests.support.server import ROOT, LiveServer

pytestmark = pytest.mark.live


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key, valid for a day: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flask-impulse test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_service(certificate: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveImpulse]:
    cert, key = certificate
    args = ["--certfile", str(cert), "--keyfile", str(key)]
    with LiveImpulse(args=args, scheme="https", verify=str(cert), log_dir=tmp_path_factory.mktemp("https")) as service:
        yield service


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=30)


def test_curl_trusts_the_service_with_its_certificate_only(
    https_service: LiveImpulse, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    trusted = curl("--cacert", str(cert), https_service.url + "health")
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout)["status"] == "ok"
    untrusted = curl(https_service.url + "health")
    assert untrusted.returncode == 60, untrusted.stderr  # curl: peer certificate cannot be authenticated
    with pytest.raises(requests.ConnectionError):  # plain HTTP on the TLS port is not served
        requests.get(https_service.url.replace("https:", "http:") + "health", timeout=5)


def test_python_clients_push_and_subscribe_over_https_with_verify(
    https_service: LiveImpulse, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    with RealtimeClient(https_service.url, verify=str(cert), retry_attempts=0) as realtime:
        stream = realtime.stream("tls:orders", timeout=10)
        assert realtime.wait_until_connected(10)
        with ServerClient(https_service.url, token=https_service.secret, verify=str(cert)) as client:
            assert client.push("tls:orders", {"n": 1}) >= 1
        assert next(stream).payload == {"n": 1}
    with https_service.subscribe("tls:more") as more:  # the test helper over TLS too
        https_service.client.push("tls:more", [1, 2])
        assert more.payloads(1) == [[1, 2]]


def test_python_clients_refuse_an_unknown_certificate_unless_told_not_to_verify(https_service: LiveImpulse) -> None:
    with (
        ServerClient(https_service.url, token=https_service.secret, max_attempts=1) as client,
        pytest.raises(ServerClientError),
    ):
        client.push("tls:orders", {"n": 2})
    # verify=False works, and urllib3 still warns that it is unverified.
    with (
        ServerClient(https_service.url, token=https_service.secret, verify=False) as client,
        pytest.warns(InsecureRequestWarning),
    ):
        assert client.push("tls:orders", {"n": 3}) == 0
    with RealtimeClient(https_service.url, retry_attempts=0) as realtime:
        errors: list[Exception] = []
        realtime.on_error(errors.append)
        realtime.subscribe("tls:orders", lambda event: None)
        assert not realtime.wait_until_connected(3)


def test_tls_files_come_from_the_environment_too(certificate: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = certificate
    env = {"IMPULSE_TLS_CERTFILE": str(cert), "IMPULSE_TLS_KEYFILE": str(key)}
    with LiveImpulse(env=env, scheme="https", verify=str(cert), log_dir=tmp_path) as service:
        assert requests.get(service.url + "health", verify=str(cert), timeout=5).json()["status"] == "ok"
        assert f"listening on https://127.0.0.1:{service.port}/" in service.log()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--certfile", "CERT"], "needs both --certfile and --keyfile"),
        (["--certfile", "CERT", "--keyfile", "/nonexistent/key.pem"], "'/nonexistent/key.pem' is not a readable file"),
        (["--log-format", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_bad_operations_options_refuse_to_start_and_say_why(
    args: list[str], message: str, certificate: tuple[Path, Path]
) -> None:
    args = [str(certificate[0]) if arg == "CERT" else arg for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "flask_impulse", "--secret", secrets.token_urlsafe(32), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr


# -- --log-format json ---------------------------------------------------------------------
@pytest.mark.parametrize("access_log", [False, True], ids=["default", "access-log"])
def test_json_logs_are_one_object_per_line_without_tokens(tmp_path: Path, access_log: bool) -> None:
    token = "tok-" + secrets.token_urlsafe(24)
    # A short rotation secret makes the app log a warning of its own (and must not show).
    rotation = "short-" + secrets.token_hex(4)
    args = ["--log-format", "json", *(["--access-log"] if access_log else [])]
    service = LiveImpulse(args=args, env={"REALTIME_SECRETS": rotation}, log_dir=tmp_path).start()
    try:
        with service.subscribe("inbox", token=token) as inbox:
            service.client.push("inbox", {"n": 1}, tokens=[token])
            assert inbox.payloads(1) == [{"n": 1}]
        # A client's mistakes, which the app logs: a wrong secret and a body that is not JSON.
        wrong = requests.post(service.url, data="{}", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert wrong.status_code in (401, 403)
        bad = requests.post(service.url, data="{", headers={"Authorization": f"Bearer {service.secret}"}, timeout=5)
        assert bad.status_code == 400
        requests.get(service.url + "health", params={"token": token}, timeout=5)
    finally:
        service.stop()
    log = service.log()
    lines = [line for line in log.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, or this raises naming it
    assert token not in log and service.secret not in log and rotation not in log
    loggers = {record["logger"] for record in records}
    assert "gunicorn.error" in loggers
    assert ("gunicorn.access" in loggers) is access_log
    assert "flask_impulse" in loggers, loggers  # the app's own records
    assert any("shorter than 32 characters" in record["message"] for record in records)
    # The client's mistakes, one record each, whether or not there is an access log.
    refused = [record["message"] for record in records if record["message"].startswith("Refused POST '/'")]
    assert [message.split(": ", 1)[1][:3] for message in refused] == [str(wrong.status_code), "400"], refused
    assert any(
        record["message"].startswith("flask-impulse ") and "listening on" in record["message"] for record in records
    )
    if not access_log:
        return
    access = [record for record in records if record["logger"] == "gunicorn.access"]
    assert {"status", "method", "path"} <= set(access[0])
    streamed = [record for record in access if record.get("query", "").startswith("channel=inbox")]
    assert streamed and "token=" in streamed[0]["query"]  # the parameter is kept, its value is not


def test_json_logs_under_your_own_gunicorn_with_the_logger_class() -> None:
    token = "tok-" + secrets.token_urlsafe(24)
    server = LiveServer(
        "flask_impulse.wsgi:app",
        env={"REALTIME_SECRET": secrets.token_urlsafe(32)},
        extra_args=["--logger-class", "flask_impulse.gunicorn_config.JsonLogger"],
        name="json-logs",
        access_log=True,
    )
    with server:
        assert requests.get(server.url + "/health", params={"token": token}, timeout=5).status_code == 200
    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert any(record["logger"] == "gunicorn.access" and record["path"] == "/health" for record in records)
    assert token not in server.log()


# -- --channels MODULE ---------------------------------------------------------------------
CHANNELS_MODULE = """
from typing import TypedDict

from flask_impulse import Channel


class Order(TypedDict):
    id: int
    total: float


orders = Channel("orders", Order)
"""


def test_declared_channels_are_validated_by_the_standalone_service(tmp_path: Path) -> None:
    (tmp_path / "shop_channels.py").write_text(CHANNELS_MODULE)
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}"}
    with LiveImpulse(args=["--channels", "shop_channels"], env=env, log_dir=tmp_path) as service:
        headers = {"Authorization": f"Bearer {service.secret}"}
        bad = requests.post(service.url, json={"channel": "orders", "payload": {"id": "7"}}, headers=headers, timeout=5)
        assert bad.status_code == 400
        assert "error" in bad.json() and "id" in bad.json()["details"]
        good = {"channel": "orders", "payload": {"id": 7, "total": 9.5}}
        assert requests.post(service.url, json=good, headers=headers, timeout=5).status_code == 200
        other = {"channel": "undeclared", "payload": {"anything": True}}
        assert requests.post(service.url, json=other, headers=headers, timeout=5).status_code == 200
    # The same module gives the TypeScript types of what the service validates.
    types = subprocess.run(
        [sys.executable, "-m", "flask_impulse", "typescript", "--app", "shop_channels"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert types.returncode == 0, types.stderr
    assert "orders: Order;" in types.stdout and "total: number;" in types.stdout


def test_channels_that_cannot_be_loaded_refuse_to_start(tmp_path: Path) -> None:
    (tmp_path / "empty_module.py").write_text("x = 1\n")
    for spec, message in (("no_such_module_here", "No module named"), ("empty_module", "declares no Channel")):
        result = subprocess.run(
            [sys.executable, "-m", "flask_impulse", "--secret", secrets.token_urlsafe(32), "--channels", spec],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr


# -- NODE_ENV=production -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "warns", "debug_shown"),
    [
        ({"NODE_ENV": "production"}, True, False),
        ({"NODE_ENV": "production", "CORS_ORIGIN": "https://app.example"}, False, False),
        ({}, False, True),
    ],
)
def test_production_shows_no_debug_output_and_warns_of_open_cors(
    env: dict[str, str], warns: bool, debug_shown: bool, tmp_path: Path
) -> None:
    environ = {"NODE_ENV": "", "CORS_ORIGIN": "", **env}
    service = LiveImpulse(args=["--log-level", "debug"], env=environ, log_dir=tmp_path).start()
    try:
        with service.subscribe("news") as news:
            service.client.push("news", {"n": 1})
            news.wait_for(1)
    finally:
        service.stop()
    log = service.log()
    assert ("CORS open to every origin (*)" in log) is warns
    assert ("[DEBUG]" in log) is debug_shown

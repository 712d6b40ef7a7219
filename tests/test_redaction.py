"""What the logs may hold: redaction of tokens and secrets, the JSON worker's statuses, and
the session's leak check itself (it must be able to fail)."""

from __future__ import annotations

import io
import logging
import secrets as random_secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from gunicorn.http import errors

from flask_impulse.gunicorn_config import RedactedAtoms
from flask_impulse.security.redaction import RedactingFilter, add_known_secrets, install, note_request_secrets, redact
from flask_impulse.server.worker import error_status
from tests.support import secrets
from tests.support.secrets import leaks, make_token

TOKEN = "s3cr3t-value"


@pytest.mark.parametrize(
    "text",
    [
        f"GET /?channel=a&token={TOKEN} HTTP/1.1",
        f"GET /?token={TOKEN}&channel=a HTTP/1.1",
        f"GET /?channel=a&to%6Ben={TOKEN} HTTP/1.1",
        f"GET /?access_token={TOKEN}",
        f"GET /?jwt={TOKEN}",
        f"Cookie: theme=dark; impulse_token={TOKEN}",
        f"No more data after: b'GET / HTTP/1.1\\r\\nCookie: sid={TOKEN}\\r\\n'",
        f"b'GET / HTTP/1.1\\r\\nAuthorization: Bearer {TOKEN}\\r\\n'",
        f"Authorization: Basic {TOKEN}",
        f"raw_env: ['REALTIME_SECRET={TOKEN}']",
        f"the token is eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.{TOKEN}",
    ],
)
def test_token_values_are_redacted_wherever_they_appear(text: str) -> None:
    cleaned = redact(text)
    assert TOKEN not in cleaned
    assert "[redacted]" in cleaned


def test_everything_else_is_left_alone() -> None:
    line = 'GET /?channel=chat%3Aroom&topic=r1&lastEventId=1-0 HTTP/1.1" 200'
    assert redact(line) == line


@pytest.mark.parametrize(
    "text",
    [
        "To run without authentication on purpose, set IMPULSE_PUSH_WITHOUT_SECRET=true.",
        "(IMPULSE_PUSH_WITHOUT_SECRET=1)",
        "IMPULSE_CORS_CREDENTIALS=False, IMPULSE_HEALTH_TOKEN= and auth=off",
    ],
)
def test_a_switch_named_like_a_secret_is_left_readable(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize("value", ["truest", "1234", "yes-indeed", "0x1f", TOKEN])
def test_a_value_that_only_starts_like_a_switch_is_still_redacted(value: str) -> None:
    cleaned = redact(f"set REALTIME_SECRET={value}.")
    assert value not in cleaned
    assert cleaned.startswith("set REALTIME_SECRET=[redacted]")


def test_access_atoms_hide_credentials_whole_and_tokens_by_value() -> None:
    atoms = RedactedAtoms(
        {
            "{authorization}i": f"Bearer {TOKEN}",
            "{cookie}i": f"a={TOKEN}",
            "{http_authorization}e": f"Bearer {TOKEN}",
            "{user-agent}i": "curl",
            "q": f"channel=a&token={TOKEN}",
            "f": f"https://app.example/?token={TOKEN}",
        }
    )
    assert atoms["{Authorization}i"] == atoms["{cookie}i"] == atoms["{http_authorization}e"] == "[redacted]"
    assert atoms["q"] == "channel=a&token=[redacted]"
    assert TOKEN not in atoms["f"]
    assert atoms["{user-agent}i"] == "curl"
    assert atoms["{x-missing}i"] == "-"


def test_error_log_filter_redacts_messages_and_tracebacks() -> None:
    try:
        raise ValueError(f"bad request /?token={TOKEN}")
    except ValueError:
        record = logging.LogRecord(
            "gunicorn.error", logging.ERROR, __file__, 1, "Error handling %s", (f"/?token={TOKEN}",), sys.exc_info()
        )
    assert RedactingFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert TOKEN not in formatted
    assert "Traceback" in formatted


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.LimitRequestLine(9000, 8190), 414),
        (errors.LimitRequestHeaders("Request Header Fields Too Large"), 431),
        (errors.InvalidHeader("X"), 400),
        (errors.InvalidRequestLine("GET /?token=x"), 400),
        (errors.UnsupportedTransferCoding("xchunked"), 501),
        (errors.InvalidChunkSize(b"-5"), 400),
        (errors.InvalidResponseHeader("X"), 500),
        (RuntimeError("app bug"), 500),
    ],
)
def test_worker_answers_gunicorn_errors_with_gunicorns_status(exc: BaseException, status: int) -> None:
    assert error_status(exc)[0] == status


def test_leak_check_finds_a_token_planted_in_a_log(tmp_path: Path) -> None:
    token = make_token("planted", ["x"])
    clean, dirty = tmp_path / "clean.log", tmp_path / "dirty.log"
    clean.write_text("GET /?token=[redacted]\n")
    dirty.write_text(f"GET /?token={token}\n")
    found = leaks([clean, dirty], secrets.secret_values())
    assert found and all(line.startswith("dirty.log") for line in found)
    # The signature alone, as in a token cut short, is found too.
    dirty.write_text(f"... {token.rsplit('.', 1)[1]} ...\n")
    assert leaks([dirty], secrets.secret_values())


@pytest.fixture
def app_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger as an app's own: not gunicorn's, no filter of ours attached."""
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    logger = logging.getLogger(f"some.app.{random_secrets.token_hex(4)}")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, written
    logger.removeHandler(handler)


def test_every_record_of_any_logger_is_redacted_by_value_once_installed(
    app_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, written = app_log
    secret = f"configured-{random_secrets.token_hex(8)}"
    install()
    add_known_secrets([secret, "short"])
    try:
        raise LookupError(f"no user for {secret}")
    except LookupError:
        logger.exception("lookup of %r failed", secret)
    text = written.getvalue()
    assert secret not in text
    assert "Traceback" in text and "[redacted]" in text


def test_the_credentials_of_the_request_being_served_are_redacted(app_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, written = app_log
    install()
    query, bearer, cookie, audience = (f"{name}-{random_secrets.token_hex(8)}" for name in ("q", "b", "c", "a"))
    app = Flask(__name__)
    headers = {"Authorization": f"Bearer {bearer}", "Cookie": f"impulse_token={cookie}"}
    with app.test_request_context(f"/?channel=x&token={query}", headers=headers):
        note_request_secrets([audience])
        logger.error("hook failed: %s %s %s %s", query, bearer, cookie, audience)
    with app.test_request_context("/"):
        logger.error("another request: %s", query)  # not this request's: left alone
    text = written.getvalue()
    assert not any(value in text.splitlines()[0] for value in (query, bearer, cookie, audience))
    assert query in text.splitlines()[1]

"""Checking what publishers and subscribers send, before anything reaches the broker."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _json
from ._missing import MISSING
from .config import Settings
from .errors import PushError

if TYPE_CHECKING:
    from werkzeug.wrappers import Request

# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators: none may
# reach a header, a log line or an SSE comment.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A lone surrogate cannot be UTF-8: it would fail wherever a name is encoded (hashes, logs).
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: An idempotency key: 1 to 255 printable ASCII characters (space to tilde), so that it fits a
#: header unchanged and whatever a publisher generates (UUIDs, hashes, "order-42:retry") fits it.
MAX_IDEMPOTENCY_KEY_LENGTH = 255
_IDEMPOTENCY_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")
IDEMPOTENCY_KEY_RULE = f"1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters"
# A structured-field string (RFC 8941): printable ASCII in quotes, with \" and \\ escaped.
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
#: The error of a channel, topic or token in a stream's query string that is not a valid name.
INVALID_QUERY_PARAMETER = "Invalid query parameter"


def query_value(request: Request, name: str) -> str | None:
    """The first value of the query parameter ``name``, or None when it is absent.

    ``request.args.get`` raises and catches werkzeug's ``BadRequestKeyError`` for an absent
    name: 3 µs each, and a stream opening asks for four names that are usually absent."""
    args = request.args
    return args[name] if name in args else None  # noqa: SIM401 (get raises inside)


#: The keys a push object and its audience may hold. Anything else is refused rather than
#: ignored: a misspelled ``audience`` or ``tokens`` would otherwise turn a private push into a
#: broadcast. ``idempotencyKey`` names a push for deduplication (docs/protocol.md, section 3.3).
PUSH_KEYS = frozenset({"channel", "payload", "audience", "idempotencyKey"})
AUDIENCE_KEYS = frozenset({"tokens", "topic"})


@dataclass(frozen=True, slots=True)
class PushRequest:
    channel: str
    payload: Any
    tokens: tuple[str, ...] | None = None
    topic: str | None = None
    idempotency_key: str | None = None


def check_name(value: str, what: str, max_length: int, error: str = "Invalid request body") -> str:
    """Return ``value`` if it may serve as a channel, topic or token; raise ``PushError`` with
    ``error`` (:data:`INVALID_QUERY_PARAMETER` for what the query string carries)."""
    if not value:
        raise PushError(error, f"{what} must be a non-empty string")
    if len(value) > max_length:
        raise PushError(error, f"{what} is longer than {max_length} characters")
    if _CONTROL.search(value):
        raise PushError(error, f"{what} must not contain control characters")
    if _SURROGATE.search(value):
        raise PushError(error, f"{what} must not contain lone surrogates")
    return value


def check_idempotency_key(value: Any, what: str) -> str:
    """Return ``value`` if it may serve as an idempotency key; raise ``PushError`` naming the rule."""
    if not isinstance(value, str) or not _IDEMPOTENCY_KEY.fullmatch(value):
        raise PushError("Invalid idempotency key", f"{what} must be {IDEMPOTENCY_KEY_RULE}")
    return value


def parse_idempotency_header(values: list[str]) -> str | None:
    """The key of an ``Idempotency-Key`` header, or None without one.

    The IETF draft defines the header as a structured-field string (``"..."``, with ``\\"`` and
    ``\\\\`` escapes); what publishers send is more often the bare key (Stripe's form). Both are
    taken: a value quoted as a valid structured-field string is unquoted, anything else is the key
    as it is. A bare comma means several headers: gunicorn joins repeated headers with commas, as
    HTTP allows, so that is the only way to tell two keys from one.
    """
    if not values:
        return None
    value = values[0]
    quoted = _SF_STRING.fullmatch(value)
    if len(values) > 1 or (quoted is None and "," in value):
        raise PushError(
            "Invalid idempotency key",
            'send one Idempotency-Key header, not several (a key holding a comma is quoted in it: "a,b")',
        )
    if quoted is not None:
        value = re.sub(r"\\(.)", r"\1", quoted.group(1))
    return check_idempotency_key(value, "the Idempotency-Key header")


def parse_push_body(body: bytes, settings: Settings) -> list[PushRequest] | PushRequest:
    """A push object, or a list of them for a batch; raise ``PushError`` naming what is wrong."""
    try:
        data = _json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PushError("Invalid JSON body") from exc
    if isinstance(data, list):
        if not data:
            raise PushError("Invalid request body", "a batch must hold at least one push object")
        if len(data) > settings.max_batch_size:
            raise PushError("Invalid request body", f"a batch holds at most {settings.max_batch_size} push objects")
        pushes = []
        for index, item in enumerate(data):
            try:
                pushes.append(parse_push_object(item, settings))
            except PushError as exc:
                raise PushError(exc.error, f"[{index}]: {exc.details}") from exc
        return pushes
    return parse_push_object(data, settings)


def parse_push_object(data: Any, settings: Settings) -> PushRequest:
    if not isinstance(data, dict):
        raise PushError("Invalid request body", "the body must be a JSON object (or an array of them)")
    _check_keys(data, PUSH_KEYS, "the push object")
    channel = data.get("channel")
    if not isinstance(channel, str):
        raise PushError("Invalid request body", "channel must be a non-empty string")
    check_name(channel, "channel", settings.max_channel_length)
    key = check_idempotency_key(data["idempotencyKey"], "idempotencyKey") if "idempotencyKey" in data else None
    if "audience" not in data:
        return PushRequest(channel, data.get("payload", MISSING), idempotency_key=key)
    audience = data["audience"]
    if not isinstance(audience, dict):
        raise PushError("Invalid request body", "audience must be an object")
    _check_keys(audience, AUDIENCE_KEYS, "audience")
    # null is not "absent": the reference broker refuses it, and a null token list must never
    # widen a push to every subscriber of the channel.
    if "tokens" in audience and audience["tokens"] is None:
        raise PushError("Invalid request body", "audience.tokens must be a string or a list of strings")
    if "topic" in audience and audience["topic"] is None:
        raise PushError("Invalid request body", "audience.topic must be a non-empty string")
    return PushRequest(
        channel,
        data.get("payload", MISSING),
        parse_tokens(audience.get("tokens"), settings),
        parse_topic(audience.get("topic"), settings),
        key,
    )


def _check_keys(data: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(key for key in data if key not in allowed)
    if unknown:
        # Quoted short and few: the answer names the mistake without echoing a flood of keys.
        shown = ", ".join(repr(key[:64]) for key in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise PushError(
            "Invalid request body", f"unknown key {shown} in {where}; allowed: {', '.join(sorted(allowed))}"
        )


def parse_topic(topic: Any, settings: Settings) -> str | None:
    if topic is None:
        return None
    if not isinstance(topic, str):
        raise PushError("Invalid request body", "audience.topic must be a non-empty string")
    return check_name(topic, "audience.topic", settings.max_topic_length)


def parse_tokens(tokens: Any, settings: Settings) -> tuple[str, ...] | None:
    if tokens is None:
        return None
    if isinstance(tokens, str):
        tokens = [tokens]
    if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
        raise PushError("Invalid request body", "audience.tokens must be a string or a list of strings")
    if len(tokens) > settings.max_audience_tokens:
        raise PushError("Invalid request body", f"audience.tokens holds at most {settings.max_audience_tokens} tokens")
    for token in tokens:
        if token:  # an empty token matches no subscriber, as in the reference broker
            check_name(token, "audience.tokens[]", settings.max_token_length)
    return tuple(tokens)

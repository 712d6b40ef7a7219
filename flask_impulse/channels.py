"""Typed channels: a channel name declared once with its payload type.

::

    class ChatMessage(TypedDict):
        text: str
        user: str

    chat_message = Channel("chat:message", ChatMessage)

    impulse.push(chat_message, {"text": "hi", "user": "ada"})     # checked by mypy
    client.subscribe(chat_message, lambda event: print(event.payload["text"]))

Why ``Channel.__call__`` exists: mypy cannot infer a type variable from ``push(channel:
Channel[T], payload: T)`` when the payload is a dict literal (it types the literal before it
knows ``T``, so a correct ``{"text": ...}`` for a ``TypedDict`` fails with "cannot infer").
A channel is therefore callable with exactly the signature of a push, and the pushers take
``Callable[P, Push[Any]]`` plus ``*args: P.args``: mypy binds ``P`` from the channel first,
then checks the payload against it with the ``TypedDict`` as context. Calling a channel builds
a typed :class:`Push`, which ``push_many`` takes too.

Runtime validation checks the JSON that goes on the wire against the payload type in strict
mode, so ``"1"`` is not an ``int`` and a TypeScript subscriber gets what its generated types
promise. It works on a base install, with a pure-Python checker (:mod:`.payload_check`);
msgspec (``pip install flask-impulse[validation]``) is the fast path, used when installed, and
also checks the types the checker does not know (``datetime``, ``UUID``...). msgspec rather
than pydantic: pydantic refuses ``typing.TypedDict`` before Python 3.12, and msgspec is a
small, fast C extension that validates JSON bytes directly.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import importlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from . import _json, payload_check
from ._missing import MISSING
from .errors import ConfigurationError, InvalidPayload

T = TypeVar("T")

Tokens = str | Iterable[str] | None


@dataclass(frozen=True)
class Push(Generic[T]):
    """One message to publish: what calling a channel returns."""

    channel: str
    payload: T
    tokens: Tokens = None
    topic: str | None = None
    #: A repeat of this key within IMPULSE_IDEMPOTENCY_TTL delivers nothing (docs/reliability.md).
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Event(Generic[T]):
    """A message as a subscriber's handler receives it."""

    channel: str
    payload: T
    #: The message id, for de-duplication or a later resume; empty from a server without ids.
    id: str = ""
    #: The topic the subscription was made with (the server does not repeat it per message).
    topic: str | None = None


class Channel(Generic[T]):
    """A channel name bound to its payload type (a ``TypedDict``, a dataclass, or any type
    the TypeScript generator maps). Two channels are equal when name and type are."""

    __slots__ = ("_validator", "name", "payload_type")

    @overload
    def __init__(self, name: str, payload_type: type[T]) -> None: ...
    @overload
    def __init__(self: Channel[Any], name: str, payload_type: object = ...) -> None: ...
    def __init__(self, name: str, payload_type: object = Any) -> None:
        # The second form takes what is not a class (Literal[...], int | None, list[X]) and
        # yields an untyped Channel[Any]; annotate the variable to type it:
        # ``level: Channel[Literal["a", "b"]] = Channel("level", Literal["a", "b"])``.
        if not isinstance(name, str) or not name:
            raise TypeError("a channel name is a non-empty string")
        self.name = name
        self.payload_type: Any = payload_type
        self._validator: Callable[[bytes], None] | None = None

    def __call__(
        self, payload: T, tokens: Tokens = None, topic: str | None = None, *, idempotency_key: str | None = None
    ) -> Push[T]:
        """A :class:`Push` of ``payload`` on this channel (the signature every typed push has)."""
        return Push(self.name, payload, tokens, topic, idempotency_key)

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, {_type_name(self.payload_type)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Channel) and (self.name, self.payload_type) == (other.name, other.payload_type)

    def __hash__(self) -> int:
        return hash(self.name)

    # -- runtime validation ---------------------------------------------------------------
    def prepare_validation(self) -> None:
        """Build the validator now, so that an unsupported type fails at start-up rather than
        on the first push: msgspec's when it is installed, else the pure-Python checker."""
        if self._validator is not None:
            return
        try:
            msgspec = importlib.import_module("msgspec")
        except ImportError:
            self._validator = self._pure_python_validator()
            return
        try:
            # A JSON schema exists exactly for the types with a JSON form: the decoder alone
            # would accept any class, then refuse every payload.
            msgspec.json.schema(self.payload_type)
            decoder = msgspec.json.Decoder(self.payload_type, strict=True)
        except TypeError as exc:
            reason = str(exc).splitlines()[-1]
            raise ConfigurationError(f"channel {self.name!r}: cannot validate {self.payload_type!r}: {reason}") from exc

        def validate(encoded: bytes) -> None:
            try:
                decoder.decode(encoded)
            except msgspec.ValidationError as exc:
                raise InvalidPayload(_describe_error(str(exc))) from None

        self._validator = validate

    def _pure_python_validator(self) -> Callable[[bytes], None]:
        try:
            check = payload_check.compile_check(self.payload_type)
        except (TypeError, NameError) as exc:
            raise ConfigurationError(f"channel {self.name!r}: cannot validate {self.payload_type!r}: {exc}") from exc

        def validate(encoded: bytes) -> None:
            try:
                check(_json.loads(encoded), "")
            except payload_check.Mismatch as exc:
                raise InvalidPayload(f"payload{exc.path}: {exc.message}") from None

        return validate

    def validate(self, payload: Any) -> None:
        """Raise :class:`InvalidPayload`, naming the wrong field, unless the JSON form of
        ``payload`` is a valid value of the payload type."""
        if payload is MISSING:
            raise InvalidPayload(f"payload: required on channel {self.name}")
        self.prepare_validation()
        try:
            encoded = _json.dumps(payload)
        except (TypeError, ValueError) as exc:
            raise InvalidPayload(f"payload: not JSON-serialisable ({exc})") from exc
        assert self._validator is not None
        self._validator(encoded)

    # -- subscriber side --------------------------------------------------------------------
    def decode(self, payload: Any) -> T:
        """The payload a handler receives: JSON as decoded, with dataclasses built."""
        return build(self.payload_type, payload)  # type: ignore[no-any-return]


def _describe_error(message: str) -> str:
    """msgspec's ``Expected `str`, got `int` - at `$.author.name``` as
    ``payload.author.name: Expected `str`, got `int```."""
    text, separator, where = message.rpartition(" - at `$")
    if not separator:
        return f"payload: {message}"
    return f"payload{where.removesuffix('`')}: {text}"


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp)


# -- building dataclasses from JSON ---------------------------------------------------------
def build(tp: Any, value: Any) -> Any:
    """``value`` (decoded JSON) shaped as ``tp``: dataclasses are instantiated, nested ones
    too; everything else stays as JSON decoded it. Not a validator: the server validates."""
    if value is None:
        return None
    tp = _strip(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise TypeError(f"{tp.__name__} expects a JSON object, not {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        init = {f.name: build(hints.get(f.name, Any), value[f.name]) for f in dataclasses.fields(tp) if f.name in value}
        return tp(**init)
    if typing.is_typeddict(tp) and isinstance(value, dict):
        hints = typing.get_type_hints(tp)
        return {key: build(hints[key], item) if key in hints else item for key, item in value.items()}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, tuple, set, frozenset) or _is_abc(origin, "Sequence", "Set"):
        if not isinstance(value, list):
            return value
        if origin is tuple and args and args[-1] is not Ellipsis:
            return tuple(build(arg, item) for arg, item in zip(args, value, strict=False))
        item_type = args[0] if args else Any
        return [build(item_type, item) for item in value]
    if (origin is dict or _is_abc(origin, "Mapping")) and isinstance(value, dict):
        item_type = args[1] if len(args) == 2 else Any
        return {key: build(item_type, item) for key, item in value.items()}
    if origin in (typing.Union, types.UnionType):
        candidates = [arg for arg in args if _strip(arg) is not type(None)]
        shaped = [arg for arg in candidates if dataclasses.is_dataclass(_strip(arg))]
        # A union holding one dataclass and JSON scalars: build the dataclass from an object.
        if len(shaped) == 1 and isinstance(value, dict):
            return build(shaped[0], value)
        if len(candidates) == 1:
            return build(candidates[0], value)
    return value


_QUALIFIERS = ("Required", "NotRequired", "ReadOnly")


def _strip(tp: Any) -> Any:
    """``tp`` without ``Annotated``, ``Required``/``NotRequired``/``ReadOnly`` or ``NewType``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated or getattr(origin, "_name", None) in _QUALIFIERS:
            tp = typing.get_args(tp)[0]
        elif hasattr(tp, "__supertype__"):
            tp = tp.__supertype__
        else:
            return tp


def _is_abc(origin: Any, *names: str) -> bool:
    return origin is not None and any(origin is getattr(collections.abc, name) for name in names)


# -- finding declared channels ------------------------------------------------------------------
def load_channels(spec: str) -> list[Channel[Any]]:
    """The channels named by ``spec``: ``module`` (every Channel at its top level),
    ``module:name`` where ``name`` is a Channel, a list of them, an ``Impulse`` extension or a
    Flask app with one."""
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    if not attribute:
        found = [value for value in vars(module).values() if isinstance(value, Channel)]
        if not found:
            raise ConfigurationError(f"module {module_name!r} declares no Channel at its top level")
        return found
    try:
        target = getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return channels_of(target)


def channels_of(target: Any) -> list[Channel[Any]]:
    """The channels held by ``target``: a Channel, an iterable of them, an Impulse extension,
    or a Flask app with one."""
    if isinstance(target, Channel):
        return [target]
    registry = getattr(target, "channels", None)  # an Impulse extension
    if registry is None:
        extensions = getattr(target, "extensions", None)  # a Flask app
        state = extensions.get("impulse") if isinstance(extensions, dict) else None
        registry = getattr(state, "channels", None)
    if isinstance(registry, Mapping):
        return list(registry.values())
    if isinstance(target, Iterable) and not isinstance(target, (str, bytes, Mapping)):
        items = list(target)
        if all(isinstance(item, Channel) for item in items):
            return items
    raise ConfigurationError(f"{target!r} is not a Channel, a list of Channels, an Impulse extension or an app")


def as_push(channel: str | Callable[..., Push[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Push[Any]:
    """The push that ``push(channel, *args, **kwargs)`` stands for, for a name or a Channel."""
    if isinstance(channel, str):
        return Push(channel, *args, **kwargs)
    return channel(*args, **kwargs)

"""Signed subscriber tokens: wildcards, grants, keys pinned to their algorithm, issuing."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from flask_impulse import ConfigurationError, issue_token
from flask_impulse.security.tokens import Grant, TokenKeys, TokenRejected, TokenVerifier, matches
from tests.support import secrets
from tests.support.secrets import make_token


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("chat:*", "chat:room-1", True),
        ("chat:*", "chat:", True),
        ("chat:*", "chat:a:b", True),
        ("chat:*", "chatroom", False),
        ("chat:*", "xchat:a", False),
        ("*", "anything at all", True),
        ("*:public", "news:public", True),
        ("*:public", "news:public:not", False),
        ("user:*:inbox", "user:42:inbox", True),
        ("exact", "exact", True),
        ("exact", "exactly", False),
        ("a.b", "axb", False),  # only * is special
        ("[x]", "[x]", True),
        ("Chat:*", "chat:a", False),  # case matters
    ],
)
def test_channel_patterns_treat_only_star_as_a_wildcard(pattern: str, value: str, expected: bool) -> None:
    assert matches(pattern, value) is expected


def test_grant_without_topics_claim_allows_any_topic_and_with_it_only_those() -> None:
    free = Grant("u", ("chat:*",), None, 0.0, {})
    assert free.allows_topic("anything") and free.allows_topic(None)
    rooms = Grant("u", ("chat:*",), ("room-1", "team-*"), 0.0, {})
    assert rooms.allows_topic("room-1") and rooms.allows_topic("team-red")
    assert not rooms.allows_topic("room-2")
    # No topic receives only whole-channel pushes, which the channel grant covers.
    assert rooms.allows_topic(None)


def verifier(**kwargs: object) -> TokenVerifier:
    keys = TokenKeys.load(secrets.JWT_SECRET, [secrets.RSA_PUBLIC_PEM, secrets.EC_PUBLIC_PEM])
    return TokenVerifier(keys, leeway=0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256"])
def test_each_accepted_algorithm_verifies_with_its_own_key(algorithm: str) -> None:
    grant = verifier().verify(make_token("alice", ["chat:*"], topics=["r1"], algorithm=algorithm, ttl=60))
    assert (grant.subject, grant.channels, grant.topics) == ("alice", ("chat:*",), ("r1",))
    assert time.time() < grant.expires_at <= time.time() + 61


def test_every_rotated_hmac_secret_verifies() -> None:
    older = secrets.FOREIGN_JWT_SECRET
    keys = TokenKeys.load([secrets.JWT_SECRET, older])
    checker = TokenVerifier(keys)
    assert checker.verify(make_token("a", ["x"])).subject == "a"
    assert checker.verify(make_token("b", ["x"], key=older)).subject == "b"
    with pytest.raises(TokenRejected, match="signature"):
        TokenVerifier(TokenKeys.load(secrets.JWT_SECRET)).verify(make_token("b", ["x"], key=older))


def test_a_key_only_verifies_the_algorithm_of_its_type() -> None:
    hmac_only = TokenVerifier(TokenKeys.load(secrets.JWT_SECRET))
    with pytest.raises(TokenRejected, match="not accepted"):
        hmac_only.verify(make_token("a", ["x"], algorithm="RS256"))
    rsa_only = TokenVerifier(TokenKeys.load(public_keys=secrets.RSA_PUBLIC_PEM))
    with pytest.raises(TokenRejected, match="not accepted"):
        rsa_only.verify(make_token("a", ["x"]))
    with pytest.raises(TokenRejected, match="not accepted"):
        rsa_only.verify(make_token("a", ["x"], algorithm="ES256"))


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"channels": "chat:*"}, "channels claim"),
        ({"channels": []}, "channels claim"),
        ({"channels": ["ok", 3]}, "channels claim"),
        ({"channels": None}, "channels claim"),
        ({"topics": "room"}, "topics claim"),
        ({"sub": ""}, "sub claim"),
        ({"sub": "line\nbreak"}, "sub claim"),
    ],
)
def test_malformed_claims_are_rejected(claims: dict[str, object], reason: str) -> None:
    payload = {"sub": "u", "channels": ["x"], "exp": int(time.time()) + 60, **claims}
    token = secrets.remember(jwt.encode(payload, secrets.JWT_SECRET, algorithm="HS256"))
    with pytest.raises(TokenRejected, match=reason) as caught:
        verifier().verify(token)
    assert token not in str(caught.value)


def test_audience_and_issuer_are_required_when_configured() -> None:
    checker = verifier(audience="realtime", issuer="https://auth.example")
    good = make_token("u", ["x"], aud="realtime", iss="https://auth.example")
    assert checker.verify(good).subject == "u"
    for claims in ({"aud": "other", "iss": "https://auth.example"}, {"aud": "realtime", "iss": "evil"}, {}):
        with pytest.raises(TokenRejected):
            checker.verify(make_token("u", ["x"], **claims))
    # A token meant for some audience is not taken by a service that names none.
    with pytest.raises(TokenRejected, match="aud"):
        verifier().verify(make_token("u", ["x"], aud="realtime"))


def test_issued_token_names_its_grant_and_expiry() -> None:
    token = secrets.remember(
        issue_token("alice", key=secrets.JWT_SECRET, channels=["chat:*"], topics=["r1"], ttl=90, claims={"role": "x"})
    )
    claims = jwt.decode(token, secrets.JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["channels"] == ["chat:*"] and claims["topics"] == ["r1"]
    assert claims["exp"] - claims["iat"] == 90 and claims["role"] == "x"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": []},
        {"channels": "chat:*"},
        {"channels": ["ok"], "topics": "room"},
        {"channels": ["ok"], "ttl": 0},
        {"channels": ["ok"], "claims": {"exp": 1}},
        {"channels": ["ok"], "algorithm": "none"},
    ],
)
def test_issue_token_refuses_what_would_not_verify(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        issue_token("alice", key=secrets.JWT_SECRET, **kwargs)  # type: ignore[arg-type]


def test_private_key_signs_and_its_own_public_key_verifies() -> None:
    keys = TokenKeys.load(private_key=secrets.EC_PRIVATE_PEM)
    assert keys.signing_algorithm == "ES256"
    token = secrets.remember(issue_token("u", key=keys.signing_key, algorithm="ES256", channels=["x"]))
    assert TokenVerifier(keys).verify(token).subject == "u"


def test_key_files_are_read_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "public.pem"
    path.write_text(secrets.RSA_PUBLIC_PEM)
    assert TokenKeys.load(public_keys=str(path)).by_algorithm.keys() == {"RS256"}


def _pem(key: object) -> str:
    return (
        key.public_key()
        .public_bytes(  # type: ignore[attr-defined, no-any-return]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secrets": "short-secret"}, "at least 32 bytes"),
        ({"public_keys": "/no/such/key.pem"}, "neither PEM text nor a readable PEM file"),
        ({"public_keys": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}, "not a PEM public key"),
        ({"public_keys": _pem(ec.generate_private_key(ec.SECP384R1()))}, "P-256"),
        ({"public_keys": _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))}, "2048"),
        ({"private_key": secrets.RSA_PUBLIC_PEM}, "not a PEM private key"),
    ],
)
def test_weak_or_unreadable_keys_stop_the_app_with_the_fix(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        TokenKeys.load(**kwargs)  # type: ignore[arg-type]
    assert "AAAA" not in str(caught.value)

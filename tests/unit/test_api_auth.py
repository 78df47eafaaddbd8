"""API keys (roles, rotation with overlap, revocation, the older formats), JWT bearer tokens signed here,
the development keys only under KEEL_ENV=dev, and the API's refusal to start without credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from unit.test_api_unit import RecordingPublisher

from keel.schemas import REPO_ROOT
from keel.settings import Settings
from keel.workflows import Catalog
from services.api.apikeys import ApiKeyConfigError, ApiKeys, Principal, hash_key
from services.api.app import create_app
from services.api.auth import Authenticator, Unauthenticated
from services.api.auth_jwt import JwtVerifier, looks_like_token
from services.api.config import ApiSettings

ISS, AUD = "https://id.example", "keel-api"
SECRET = "s" * 40
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def key(id_: str, role: str, tenant: str | None, secret: str, **extra: object) -> dict[str, object]:
    return {"id": id_, "tenant": tenant, "role": role, "hash": hash_key(secret), **extra}


def keys(*items: dict[str, object]) -> ApiKeys:
    return ApiKeys.from_json(json.dumps(list(items)))


def test_a_key_is_its_id_tenant_and_role():
    found = keys(key("k1", "viewer", "acme", "secret-1"), key("op", "operator", None, "secret-2"))
    assert found.principal("secret-1") == Principal("key:k1", "viewer", "acme")
    assert found.principal("secret-2") == Principal("key:op", "operator", None)
    assert found.principal("secret-3") is None and found.principal("") is None
    assert found.principal("secret-1 ") is None


def test_rotation_with_overlap_and_revocation():
    old = key("acme-2025", "submitter", "acme", "old", expires_at="2026-06-01T13:00:00Z")
    new = key("acme-2026", "submitter", "acme", "new", not_before="2026-06-01T11:00:00+00:00")
    gone = key("acme-leaked", "submitter", "acme", "leaked", revoked=True)
    found = keys(old, new, gone)
    during = NOW
    assert found.principal("old", during).id == "key:acme-2025"  # type: ignore[union-attr]
    assert found.principal("new", during).id == "key:acme-2026"  # type: ignore[union-attr]
    after = NOW + timedelta(hours=2)
    assert found.principal("old", after) is None and found.principal("new", after) is not None
    before = NOW - timedelta(hours=2)
    assert found.principal("new", before) is None
    assert found.principal("leaked", during) is None


def test_the_older_formats_are_read_as_submitter_and_operator_keys():
    env = {
        "KEEL_API_KEYS": json.dumps({"initech": [hash_key("k1")]}),
        "KEEL_OPERATOR_KEYS": json.dumps([hash_key("op1")]),
    }
    found = ApiKeys.from_env(env)
    assert found.principal("k1") == Principal(f"key:initech-{hash_key('k1')[7:15]}", "submitter", "initech")
    assert found.principal("op1") == Principal(f"key:operator-{hash_key('op1')[7:15]}", "operator", None)


@pytest.mark.parametrize(
    "raw, problem",
    [
        ("not json", "not valid JSON"),
        ('"a"', "must be a JSON list of keys"),
        ('[{"id": "a"}]', "role None is not one of"),
        (json.dumps([key("a", "owner", "acme", "x")]), "role 'owner' is not one of"),
        (json.dumps([key("a", "viewer", None, "x")]), "a viewer needs a tenant"),
        (json.dumps([key("a", "operator", "acme", "x")]), "its tenant must be null"),
        (json.dumps([key("a b", "viewer", "acme", "x")]), "id 'a b' must match"),
        (
            json.dumps([key("a", "viewer", "acme", "x"), key("a", "viewer", "acme", "y")]),
            "two keys have the id",
        ),
        (json.dumps([key("a", "viewer", "acme", "x"), key("b", "admin", None, "x")]), "same key hash"),
        (json.dumps([{**key("a", "viewer", "acme", "x"), "hash": "x"}]), "not 'sha256:<64 hex digits>'"),
        (json.dumps([key("a", "viewer", "acme", "x", expires_at="soon")]), "not an ISO 8601"),
        (json.dumps([key("a", "viewer", "acme", "x", revoked="yes")]), "revoked must be true or false"),
        (json.dumps([key("a", "viewer", "acme", "x", scope="all")]), "unknown field"),
    ],
)
def test_a_malformed_key_configuration_is_refused_with_the_reason(raw, problem):
    with pytest.raises(ApiKeyConfigError, match=problem):
        ApiKeys.from_json(raw)


def test_the_development_keys_only_under_keel_env_dev_and_only_without_configured_keys():
    dev = Authenticator.from_env({"KEEL_ENV": "dev"})
    roles = {k: dev.authenticate(k).role for k in ("acme-dev-key", "acme-viewer-dev-key", "ops-dev-key")}
    assert roles == {"acme-dev-key": "submitter", "acme-viewer-dev-key": "viewer", "ops-dev-key": "operator"}
    assert dev.authenticate("admin-dev-key") == Principal("key:admin-dev", "admin", None)
    assert dev.authenticate("globex-dev-key").tenant == "globex"
    configured = Authenticator.from_env(
        {"KEEL_ENV": "dev", "KEEL_OPERATOR_KEYS": json.dumps([hash_key("o")])}
    )
    with pytest.raises(Unauthenticated):
        configured.authenticate("acme-dev-key")
    prod = Authenticator.from_env({"KEEL_API_KEYS": json.dumps([key("k", "viewer", "acme", "k-secret")])})
    for dev_key in ("acme-dev-key", "ops-dev-key", "admin-dev-key"):
        with pytest.raises(Unauthenticated):
            prod.authenticate(dev_key)
    for env in ({}, {"KEEL_ENV": "production"}, {"KEEL_ENV": "test"}):
        with pytest.raises(ApiKeyConfigError, match="no API keys and no JWT configured"):
            Authenticator.from_env(env)


def test_outside_dev_the_api_refuses_to_start_without_credentials():
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEEL_API_KEYS", "KEEL_OPERATOR", "KEEL_JWT"))
    }
    env.pop("KEEL_ENV", None)
    env["PYTHONPATH"] = f"{REPO_ROOT / 'libs'}:{REPO_ROOT}"
    done = subprocess.run(
        [sys.executable, "-m", "services.api", "--port", "0"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "refusing to start: no API keys and no JWT configured" in done.stderr
    assert "KEEL_ENV=dev" in done.stderr


# --- JWT ---------------------------------------------------------------------------------------------


def claims(**changes: object) -> dict[str, object]:
    base = {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "exp": int(time.time()) + 300,
        "tenant": "acme",
        "role": "viewer",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def hs(**changes: object) -> str:
    return jwt.encode(claims(**changes), SECRET, algorithm="HS256")


def hs_auth() -> Authenticator:
    env = {"KEEL_JWT_KEY": SECRET, "KEEL_JWT_ISSUER": ISS, "KEEL_JWT_AUDIENCE": AUD}
    return Authenticator.from_env(env)


def test_a_valid_token_is_its_subject_tenant_and_role():
    auth = hs_auth()
    assert auth.authenticate(hs()) == Principal(f"token:{ISS}#alice", "viewer", "acme")
    assert auth.authenticate(hs(tenant=None, keel_tenant="globex", role="submitter")).tenant == "globex"
    # operators and admins act across tenants, whatever tenant claim their token carries
    assert auth.authenticate(hs(role="operator")) == Principal(f"token:{ISS}#alice", "operator", None)


@pytest.mark.parametrize(
    "token, problem",
    [
        (hs(exp=int(time.time()) - 600), "expired"),
        (hs(exp=None), 'missing the "exp" claim'),
        (hs(aud="another-api"), "(?i)audience"),
        (hs(aud=None), '"aud"'),
        (hs(iss="https://evil.example"), "(?i)issuer"),
        (jwt.encode(claims(), "x" * 40, algorithm="HS256"), "Signature verification failed"),
        (hs(role="owner"), "role 'owner'"),
        (hs(role=None), "role None"),
        (hs(tenant=None), "needs a tenant claim"),
        (hs(tenant="Acme Corp"), "tenant is refused"),
        (jwt.encode(claims(), None, algorithm="none"), "alg value is not allowed"),
    ],
)
def test_a_token_is_refused_with_the_reason(token, problem):
    with pytest.raises(Unauthenticated, match=problem):
        hs_auth().authenticate(token)


def hs_signed_with(secret: bytes, body: dict[str, object]) -> str:
    """An HS256 token made by hand (PyJWT itself refuses to sign with a PEM key)."""

    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    signing = f"{part(header)}.{part(json.dumps(body).encode())}"
    return f"{signing}.{part(hmac.new(secret, signing.encode(), hashlib.sha256).digest())}"


def pem(private: object) -> str:
    public = private.public_key()  # type: ignore[attr-defined]
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.mark.parametrize(
    "private, alg",
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
)
def test_a_public_key_verifies_rs256_and_es256_and_refuses_hs256_made_with_it(private, alg):
    public = pem(private)
    env = {"KEEL_JWT_KEY": public, "KEEL_JWT_ISSUER": ISS, "KEEL_JWT_AUDIENCE": AUD}
    auth = Authenticator.from_env(env)
    assert auth.authenticate(jwt.encode(claims(role="admin"), private, algorithm=alg)).role == "admin"
    other = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    with pytest.raises(Unauthenticated, match="Signature verification failed"):
        auth.authenticate(jwt.encode(claims(), other, algorithm=alg))
    # the public key as an HMAC secret (the classic confusion) is refused: HS256 is not allowed here
    forged = hs_signed_with(public.encode(), claims())
    with pytest.raises(Unauthenticated, match="alg value is not allowed"):
        auth.authenticate(forged)


def test_tokens_and_keys_are_told_apart_by_shape():
    assert looks_like_token(hs()) and not looks_like_token("acme-dev-key")
    with pytest.raises(Unauthenticated, match="bearer tokens are not configured"):
        Authenticator.from_env({"KEEL_ENV": "dev"}).authenticate(hs())


@pytest.mark.parametrize(
    "env, problem",
    [
        ({"KEEL_JWT_KEY": SECRET}, "set KEEL_JWT_ISSUER, KEEL_JWT_AUDIENCE"),
        ({"KEEL_JWT_ISSUER": ISS, "KEEL_JWT_AUDIENCE": AUD}, "KEEL_JWT_KEY or KEEL_JWT_JWKS_URL"),
        ({"KEEL_JWT_KEY": "short", "KEEL_JWT_ISSUER": ISS, "KEEL_JWT_AUDIENCE": AUD}, "at least 32"),
        (
            {"KEEL_JWT_KEY": "-----BEGIN PRIVATE KEY-----", "KEEL_JWT_ISSUER": ISS, "KEEL_JWT_AUDIENCE": AUD},
            "not a public key",
        ),
        (
            {
                "KEEL_JWT_KEY": SECRET,
                "KEEL_JWT_JWKS_URL": "http://x",
                "KEEL_JWT_ISSUER": ISS,
                "KEEL_JWT_AUDIENCE": AUD,
            },
            "not both",
        ),
    ],
)
def test_a_half_configured_jwt_is_refused_at_start_up(env, problem):
    with pytest.raises(ApiKeyConfigError, match=problem):
        JwtVerifier.from_env(env)


def test_tokens_are_checked_with_the_issuers_jwks():
    """KEEL_JWT_JWKS_URL: the signing key is found by the token's kid in the issuer's key set (served
    here on loopback), and a token signed by a key not in the set is refused."""
    import http.server
    import threading

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Keys(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwks.json"
        auth = Authenticator.from_env(
            {"KEEL_JWT_JWKS_URL": url, "KEEL_JWT_ISSUER": ISS, "KEEL_JWT_AUDIENCE": AUD}
        )
        token = jwt.encode(claims(role="submitter"), private, algorithm="RS256", headers={"kid": "k1"})
        assert auth.authenticate(token) == Principal(f"token:{ISS}#alice", "submitter", "acme")
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with pytest.raises(Unauthenticated, match="not accepted"):
            auth.authenticate(jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "k2"}))
        with pytest.raises(Unauthenticated, match="Signature verification failed"):
            auth.authenticate(jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "k1"}))
    finally:
        server.shutdown()


def test_an_issuer_whose_key_set_cannot_be_fetched_is_503_not_401():
    """The token is neither accepted nor refused while the JWKS is down: 503 with Retry-After (a 401
    would tell the client its valid token is bad)."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    auth = Authenticator.from_env(
        {
            "KEEL_JWT_JWKS_URL": f"http://127.0.0.1:{port}/jwks.json",
            "KEEL_JWT_ISSUER": ISS,
            "KEEL_JWT_AUDIENCE": AUD,
        }
    )
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(role="viewer"), private, algorithm="RS256", headers={"kid": "k1"})
    with TestClient(
        create_app(
            Settings(), ApiSettings(), auth=auth, catalog=Catalog.configured(), publisher=RecordingPublisher()
        )
    ) as c:
        reply = c.get("/v1/workflows", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 503 and reply.headers["retry-after"] == "5"
    assert reply.json()["error"]["code"] == "token_issuer_unavailable"


def test_over_http_an_expired_or_revoked_key_is_401_and_a_role_too_small_403():
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    auth = Authenticator(
        keys(
            key("v", "viewer", "acme", "viewer-secret"),
            key("old", "submitter", "acme", "old-secret", expires_at=past),
            key("gone", "submitter", "acme", "gone-secret", revoked=True),
        )
    )
    with TestClient(
        create_app(
            Settings(), ApiSettings(), auth=auth, catalog=Catalog.configured(), publisher=RecordingPublisher()
        )
    ) as c:
        for secret in ("old-secret", "gone-secret", "unknown"):
            reply = c.get("/v1/workflows", headers={"Authorization": f"Bearer {secret}"})
            assert (reply.status_code, reply.headers["www-authenticate"]) == (401, "Bearer"), secret
        viewer = {"Authorization": "Bearer viewer-secret"}
        assert c.get("/v1/workflows", headers=viewer).status_code == 200
        refused = c.post("/v1/runs", headers=viewer, json={"workflow": "outbound_email", "input": {}})
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
        assert "key:v is a viewer" in refused.json()["error"]["message"]
        assert c.get("/v1/dead-letters", headers=viewer).status_code == 403


def _app(auth: Authenticator):
    """The API with the workflow files alone: the live view would wait 5 s for keel.definitions' end."""
    return create_app(
        Settings(), ApiSettings(), auth=auth, catalog=Catalog.configured(), publisher=RecordingPublisher()
    )

"""Who is calling: no auth (loopback only), a static security key, or a JWT whose `sub` is
the user. Every route but `/health` authenticates first; the routes then push the caller's
user into each db call (`Caller.owner`), so a user reaches only their own records.

    AgentOS(agents, db, security_key="...")                       # an operator's key: every user
    AgentOS(agents, db, jwt=JWTAuth(secret="..."))                # HS256 tokens
    AgentOS(agents, db, jwt=JWTAuth(jwks_url="https://.../jwks.json", audience="my-api"))  # RS256

A token with the admin scope (`JWTAuth(admin_scope=)`, "admin" by default, in the `scope`
claim as OAuth 2 writes it, or a `scopes`/`scp` list) is an admin: it may name any user or
none (every user's records). The security key is an admin credential too. Without auth the
server trusts the `user_id` a request names, so it answers only clients on the loopback
interface unless `allow_remote_without_auth` says something in front of it authenticates."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agentkeep.db.errors import InvalidInputError

KEY_ENV = "AGENTKEEP_SECURITY_KEY"  # the security key when AgentOS is given none
REMOTE_ENV = "AGENTKEEP_ALLOW_REMOTE_WITHOUT_AUTH"  # "1": as allow_remote_without_auth=True (`serve --insecure`)
bearer = HTTPBearer(auto_error=False, description="the security key, or a JWT")


class Unauthorized(Exception):
    """No credential, or one the server does not accept (answered 401)."""


class Forbidden(Exception):
    """An authenticated caller asked for what it may not have (answered 403)."""


@dataclass(frozen=True)
class Caller:
    """The authenticated caller. `user_id` None with `admin`: the server without auth, or the
    security key."""

    user_id: str | None
    admin: bool
    via: str  # "none" | "key" | "jwt"
    scopes: frozenset = field(default_factory=frozenset)
    claims: dict = field(default_factory=dict, compare=False)  # a JWT's, for a tenant resolver

    @property
    def name(self) -> str:
        """Who did it, as recorded (`resolved_by` of an approval)."""
        return self.user_id or {"key": "security-key", "none": "api"}.get(self.via, "admin")

    def owner(self, asked: str | None) -> str | None:
        """The user a db call is scoped to: what was asked for (an admin; None is everyone),
        else the caller itself; asking for another user is forbidden."""
        if self.admin:
            return asked
        if asked is not None and asked != self.user_id:
            raise Forbidden(f"you may only reach your own records (user {self.user_id!r})")
        return self.user_id

    def require_admin(self, what: str) -> None:
        if not self.admin:
            raise Forbidden(f"{what} needs the admin scope")


OPEN = Caller(user_id=None, admin=True, via="none")
KEY = Caller(user_id=None, admin=True, via="key")


class JWTAuth:
    """Bearer JWTs: HS256 with `secret`, or RS256/ES256 with a `public_key` or the keys at
    `jwks_url` (fetched and cached by PyJWT's client). `sub` (or `user_claim`) is the user;
    `audience` and `issuer` are checked when given; `exp` is required."""

    def __init__(self, *, secret: str | None = None, public_key: Any = None, jwks_url: str | None = None,
                 algorithms: Sequence[str] | None = None, audience: str | None = None,
                 issuer: str | None = None, user_claim: str = "sub", admin_scope: str = "admin",
                 leeway: float = 30) -> None:
        import jwt

        if sum(x is not None for x in (secret, public_key, jwks_url)) != 1:
            raise InvalidInputError("JWTAuth needs exactly one of secret=, public_key= or jwks_url=")
        if secret is not None and len(secret.encode()) < 32:
            raise InvalidInputError("an HS256 secret must be at least 32 bytes")
        self.algorithms = list(algorithms or (["HS256"] if secret is not None else ["RS256"]))
        if secret is not None and any(not a.startswith("HS") for a in self.algorithms):
            raise InvalidInputError("a shared secret verifies HS* tokens only")
        if secret is None and any(a.startswith("HS") for a in self.algorithms):
            # a public key used as an HMAC secret would let anyone sign tokens
            raise InvalidInputError("a public key or JWKS verifies asymmetric algorithms (RS256, ES256...) only")
        self.key = secret if secret is not None else public_key
        self.jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=10) if jwks_url else None
        self.audience, self.issuer = audience, issuer
        self.user_claim, self.admin_scope, self.leeway = user_claim, admin_scope, leeway

    async def caller(self, token: str) -> Caller:
        import jwt

        try:
            key = self.key
            if self.jwks is not None:  # a network fetch when the key id is not cached yet
                key = (await asyncio.to_thread(self.jwks.get_signing_key_from_jwt, token)).key
            claims = jwt.decode(token, key, algorithms=self.algorithms, audience=self.audience, issuer=self.issuer,
                                leeway=self.leeway, options={"require": ["exp"], "verify_aud": self.audience is not None})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is not accepted: {exc}") from None
        scopes = _scopes(claims)
        user = claims.get(self.user_claim)
        admin = self.admin_scope in scopes
        if not admin and (not isinstance(user, str) or not user):
            raise Unauthorized(f"the token has no {self.user_claim!r} claim naming a user")
        return Caller(user_id=user if isinstance(user, str) and user else None, admin=admin, via="jwt",
                      scopes=frozenset(scopes), claims=claims)


def _scopes(claims: dict) -> list[str]:
    found: list[str] = []
    for name in ("scope", "scopes", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found += value.split()
        elif isinstance(value, list):
            found += [v for v in value if isinstance(v, str)]
    return found


class Auth:
    """How an AgentOS authenticates (built from its `security_key`, `jwt` and
    `allow_remote_without_auth`)."""

    def __init__(self, security_key: str | None, jwt: JWTAuth | None, allow_remote_without_auth: bool) -> None:
        security_key = security_key if security_key is not None else os.environ.get(KEY_ENV) or None
        allow_remote_without_auth = allow_remote_without_auth or os.environ.get(REMOTE_ENV) == "1"
        if security_key is not None and (not isinstance(security_key, str) or len(security_key) < 16):
            raise InvalidInputError("security_key must be a string of at least 16 characters")
        if jwt is not None and not isinstance(jwt, JWTAuth):
            raise InvalidInputError("jwt must be a JWTAuth")
        self.key = security_key.encode() if security_key is not None else None
        self.jwt = jwt
        self.allow_remote = allow_remote_without_auth
        self._issued: dict[str, Caller] = {}  # in-process credentials (`issued`)

    @property
    def enabled(self) -> bool:
        return self.key is not None or self.jwt is not None

    @property
    def mode(self) -> str:
        return "+".join(m for m, on in (("security_key", self.key), ("jwt", self.jwt)) if on) or "none"

    @contextlib.contextmanager
    def issued(self, caller: Caller) -> Iterator[str]:
        """A bearer token standing for `caller`, valid in this process while the block runs:
        how the server calls its own routes (a schedule's HTTP target) as a schedule's owner."""
        token = secrets.token_urlsafe(32)
        self._issued[token] = caller
        try:
            yield token
        finally:
            del self._issued[token]

    async def caller(self, request: Request, token: str | None) -> Caller:
        if token and token in self._issued:
            return self._issued[token]
        if not self.enabled:
            client = request.client.host if request.client else None
            if not self.allow_remote and not _loopback(client):
                raise Forbidden("this server has no authentication and answers only clients on its own machine")
            return OPEN
        if not token:
            raise Unauthorized("this server needs a bearer token (Authorization: Bearer ...)")
        if self.key is not None and hmac.compare_digest(token.encode(), self.key):
            return KEY
        if self.jwt is not None and token.count(".") == 2:
            return await self.jwt.caller(token)
        raise Unauthorized("the bearer token is not accepted")


def _loopback(host: str | None) -> bool:
    if host is None:  # an in-process ASGI client has no address
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")


async def authenticate(request: Request,
                       credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:
    """The routers' dependency: the caller, kept on the request for the routes."""
    agent_os = request.app.state.os
    caller = await agent_os.auth.caller(request, credentials.credentials if credentials else None)
    request.state.caller = caller
    request.state.tenant = await agent_os.tenant_for(request)  # it may read the caller's claims
    return caller


def caller_of(request: Request) -> Caller:
    return request.state.caller

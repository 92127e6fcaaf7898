"""Reaching a db's server: the default connect timeout, and the one error every backend
raises when its server cannot be reached, refuses the login or has no such database."""

from __future__ import annotations

from agentkeep.db.errors import ConnectionFailedError
from agentkeep.db.messages import shorten

# seconds a backend waits for its server to answer a new connection (the `connect_timeout`
# argument of each server backend); without it a dead host costs the drivers' own defaults,
# from 10 s (PyMySQL) to forever (libpq)
CONNECT_TIMEOUT_S = 5.0


def connection_failed(what: str, where: str, exc: BaseException, *, reason: str | None = None,
                      secret: str | None = None) -> ConnectionFailedError:
    """"cannot connect to <what> at <where>: <the driver's reason>", on one line; `where`
    must carry no password, and `secret` (the password) is masked in the reason too."""
    text = shorten(reason or str(exc) or type(exc).__name__, 300)
    if secret:
        text = text.replace(secret, "***")
    return ConnectionFailedError(f"cannot connect to {what} at {where}: {text}")


def raised_as(exc: BaseException, *names: str) -> bool:
    """Whether `exc` is an instance of one of the classes named "module.Class", without
    importing those modules (a kernel may meet errors of several optional packages)."""
    return any(f"{c.__module__}.{c.__qualname__}" in names for c in type(exc).__mro__)


# errors of the cloud clients (botocore for DynamoDB and S3, gcsfs's aiohttp, google-auth)
# that mean the service was not reached or refused the credentials
_CLOUD_UNREACHABLE = (
    "botocore.exceptions.ConnectionError",  # refused, DNS, connect timeout, TLS
    "botocore.exceptions.NoCredentialsError",
    "botocore.exceptions.PartialCredentialsError",
    "aiohttp.client_exceptions.ClientConnectorError",
    "google.auth.exceptions.DefaultCredentialsError",
    "google.auth.exceptions.RefreshError",
)
_AWS_LOGIN_REFUSED = {
    "UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException", "ExpiredTokenException",
    "MissingAuthenticationTokenException", "InvalidAccessKeyId", "SignatureDoesNotMatch",
}


def cloud_unreachable(exc: BaseException) -> bool:
    """Whether a cloud client's error (or the one it wraps) means the service could not be
    reached or refused the credentials."""
    for error in (exc, exc.__cause__):
        if error is None:
            continue
        if raised_as(error, *_CLOUD_UNREACHABLE):
            return True
        code = (getattr(error, "response", None) or {}).get("Error", {}).get("Code")
        if code in _AWS_LOGIN_REFUSED:
            return True
    return False

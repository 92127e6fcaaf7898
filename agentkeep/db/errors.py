"""Errors raised by every db. Catch `DbError` for all of them."""


class DbError(Exception):
    """Base class of every agentkeep db error."""


class NotFoundError(DbError, LookupError):
    """The record does not exist, or is not visible to the caller's user_id."""


class ConflictError(DbError):
    """A compare-and-set lost: the stored record is not in the state the write expected."""


class OwnershipError(DbError):
    """The record id is already stored under another owner."""


class InvalidInputError(DbError, ValueError):
    """A bad argument or payload; nothing was written."""


class ConnectionFailedError(DbError):
    """The db's server could not be reached, refused the login, or has no such database
    (the driver's error is chained; the URL is shown without its password)."""


class SchemaError(DbError):
    """The stored schema is incompatible with this version of agentkeep."""


class UnsupportedError(DbError, NotImplementedError):
    """This backend cannot do this; see `db.capabilities`."""

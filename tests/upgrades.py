"""A schema upgrade for the migration tests: `monkeypatch.setattr(tables_module,
"default_specs", upgraded_specs)` makes every db built afterwards expect the sessions
table one version further."""

import dataclasses

from agentkeep.db import tables as tables_module
from agentkeep.db.tables import Column, Index

ORIGINAL = tables_module.default_specs
CURRENT = ORIGINAL()["sessions"].version  # the sessions table's version in this release
NEXT = CURRENT + 1  # the one `upgraded_specs` expects


def upgraded_specs():
    """The next version of the sessions table: one new column and an index on it."""
    specs = ORIGINAL()
    old = specs["sessions"]
    specs["sessions"] = dataclasses.replace(
        old,
        columns=old.columns + (Column("color", "str"),),
        indexes=old.indexes + (Index(("user_id", "color")),),
        internal=old.internal + ("color",),
        version=NEXT,
        column_map={},
    )
    return specs

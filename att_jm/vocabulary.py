"""The words of the contract, defined once: Results, views, tables, cleanup fields, states.

A pure module at the bottom of the layers (no imports of the package): the domain, the
projections, the service, the CLI and the audit tool all name these things from here.
`StrEnum`/`IntEnum` members are the strings and numbers themselves (JSON values, SQL,
comparisons, f-strings). The tuples (VIEWS, TABLE_VIEWS, TABLES, CLEANUP_FIELDS) hold the plain
`str` values, in order: fit for what takes no subclass (orjson's dict keys) or shows a
`repr` (argparse's choices).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final


class Result(IntEnum):
    """A script's Result: what the contract calls 3 = Succeeded, 2 = Failed."""

    FAILED = 2
    SUCCEEDED = 3


class View(StrEnum):
    """The views published on `P/job-manager/views/{view}` (and `views.get`)."""

    JOBS = "jobs"
    QUEUE = "queue"
    EXECUTED = "executed"
    FAILED = "failed"
    SETTINGS = "settings"


VIEWS: Final[tuple[str, ...]] = tuple(view.value for view in View)
TABLE_VIEWS: Final[tuple[str, ...]] = tuple(
    view.value for view in (View.JOBS, View.QUEUE, View.EXECUTED, View.FAILED))


class Table(StrEnum):
    """The tables Auto Cleanup keeps (`cleanup.run` also takes `all`)."""

    EXECUTED = "executed"
    FAILED = "failed"


TABLES: Final[tuple[str, ...]] = tuple(table.value for table in Table)


class CleanupField(StrEnum):
    """The fields of one table's Auto Cleanup policy."""

    MAX_ROWS = "max_rows"
    MAX_AGE_DAYS = "max_age_days"
    EVERY_SECONDS = "every_seconds"


CLEANUP_FIELDS: Final[tuple[str, ...]] = tuple(field.value for field in CleanupField)


class EntryState(StrEnum):
    """Where an execution is: the queue (queued, running), a table, or gone from all."""

    QUEUED = "queued"
    RUNNING = "running"
    EXECUTED = "executed"
    FAILED = "failed"
    GONE = "gone"  # removed from the queue or Executed, deleted from Failed, or cleaned up

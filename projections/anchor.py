"""The views at an archival anchor: saved with the anchor, and where a rebuild starts.

Once the rows up to an anchor's position P are archived (`att_jm.log.anchor`), the views
can no longer be built from the first row. The anchor holds them as they were at P (every
table of `projections.schema`, the tracked position and the views' positions included):
`views_state` takes them from views at P, `load_views_state` puts them into views (emptied
first); the rows after P then apply with the usual rules, which gives the views of
applying every event from the first (the rules read only the rows of the views).
"""

from __future__ import annotations

from typing import Any

from att_jm.log.anchor import Anchor, read_anchor
from att_jm.log.backend import dialect_of
from att_jm.log.rows import StoreReader
from projections.schema import TABLES
from projections.views import Views


def views_state(views: Views) -> dict[str, Any]:
    """Every table of `views`: {table: {"columns": [...], "rows": [[...], ...]}}."""
    state: dict[str, Any] = {}
    db = views._db
    for table in TABLES:
        cursor = db.execute(f"SELECT * FROM {table} ORDER BY 1")  # noqa: S608 -- fixed names
        columns = [column[0] for column in cursor.description]
        state[table] = {"columns": columns, "rows": [list(row) for row in cursor]}
    return state


def load_views_state(views: Views, state: dict[str, Any]) -> None:
    """Make `views` those of `state` (from `views_state`), in one transaction."""
    views.reset()
    db = views._db
    dialect = views._dialect
    cursor = db.cursor()
    cursor.execute(dialect.begin_write)
    try:
        for table in TABLES:
            saved = state.get(table)
            if not saved or not saved["rows"]:
                continue
            columns = saved["columns"]
            cursor.executemany(dialect.q(
                f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 -- fixed names
                f"VALUES ({', '.join('?' * len(columns))})"), [tuple(r) for r in saved["rows"]])
        cursor.execute("COMMIT")
    except BaseException:
        if dialect.in_transaction(db):
            cursor.execute("ROLLBACK")
        raise
    views._written()


def anchor_of(reader: StoreReader) -> Anchor | None:
    """The current anchor of the store `reader` reads (None: never archived)."""
    return read_anchor(reader.connection, dialect_of(reader.path))


def start_from_anchor(views: Views, anchor: Anchor | None) -> bool:
    """Views behind `anchor` (a rebuild, or views older than the archival) made those at
    its position; whether they were."""
    if anchor is None or views.position >= anchor.position:
        return False
    load_views_state(views, anchor.state()["views"])
    return True

"""What the writer needs of the lease without PostgreSQL's driver: the exception that ends
its active phase, and how a refused insert is recognized (att_jm/service/lease.py)."""

from __future__ import annotations

from typing import Final

#: The SQLSTATE of an insert the lease's fence refused (att_jm/service/lease.py).
FENCED: Final = "AJ001"


class LeaseLost(BaseException):
    """This instance does not hold the lease (any more): a commit is refused, the writer
    stops being active.

    A BaseException on purpose: every `except Exception` on the way (a unit of work that
    failed is retried, split, recorded as rejected ...) must let it through to the writer's
    loop, which leaves; nothing may be recorded for it.
    """


def fenced(error: BaseException) -> bool:
    """Whether `error` (or what it wraps) is the fence refusing an insert (a psycopg error
    with SQLSTATE FENCED)."""
    seen: BaseException | None = error
    for _ in range(8):  # the library wraps the driver's error as its cause
        if seen is None:
            return False
        if getattr(seen, "sqlstate", None) == FENCED:
            return True
        seen = seen.__cause__ or seen.__context__
    return False

"""Hypothesis strategies for well-formed hostile input: every value at its extremes."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from att_jm.domain.commands import PARSERS

#: The arguments each command knows (and a stranger), to aim generated values at them.
KEYS: dict[str, tuple[str, ...]] = {
    "job.add": ("name", "script", "trigger", "match", "command", "timeout_seconds", "enabled"),
    "job.update": ("name", "script", "trigger", "match", "command", "timeout_seconds",
                   "enabled"),
    "job.remove": ("name",),
    "queue.remove": ("id",),
    "queue.execute-now": ("id",),
    "executed.remove": ("id",),
    "failed.execute": ("id",),
    "failed.delete": ("id",),
    "settings.set": ("interval_seconds", "executed_cleanup", "failed_cleanup"),
    "cleanup.run": ("table",),
    "views.get": ("view", "id", "offset", "limit"),
    "trace.get": ("id",),
}
EXTREMES: list[Any] = [
    1e308, -1e308, 1e12, -0.0, 0.0, 5e-324, 2**63, -(2**63), 2**64 - 1, 0, 1, -1, True, False,
    None, "", "x" * 70_000, "é" * 20_000, "\u0000", "a/b", "+", "#", "../x", "{a}" * 300,
    "{", "}}", [], {}, [[[[[]]]]], "backup.sh", "alarm", "executed", "all", "queue",
]


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


SCALARS = st.one_of(
    st.sampled_from(EXTREMES),
    st.none(), st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from([70, 200, 300]).map(_nested),  # past the depth limit
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)
CLEANUP = st.fixed_dictionaries(
    {}, optional={"max_rows": JSON, "max_age_days": JSON, "every_seconds": JSON},
)


@st.composite
def commands(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(PARSERS)))
    keys = draw(st.lists(st.sampled_from(KEYS[name]), unique=True, max_size=len(KEYS[name])))
    args: dict[str, Any] = {}
    for key in keys:
        if key.endswith("_cleanup"):
            args[key] = draw(st.one_of(CLEANUP, JSON))
        else:
            args[key] = draw(JSON)
    if draw(st.integers(0, 9)) == 0:
        args[draw(st.text(min_size=1, max_size=5))] = draw(JSON)
    return name, args

"""The relay's niceness: `relay_nice` while it is behind the log, the writer's once caught up."""

from __future__ import annotations

import pytest
import structlog

from att_jm.relay.priority import BEHIND_ROWS, CALM_SECONDS, Priority


class Nice:
    """A thread's niceness, as the system keeps it; `floor`: the lowest it lets it return
    to (RLIMIT_NICE / CAP_SYS_NICE)."""

    def __init__(self, start: int = 0, floor: int | None = None) -> None:
        self.value = start
        self.floor = start if floor is None else floor
        self.calls: list[int] = []

    def get(self) -> int:
        return self.value

    def set(self, nice: int) -> None:
        self.calls.append(nice)
        if nice < self.floor:
            raise PermissionError(1, "Operation not permitted")
        self.value = nice


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def priority(nice: Nice, busy: int = 10, clock: Clock | None = None) -> Priority:
    return Priority(busy, get=nice.get, set_nice=nice.set, monotonic=clock or Clock())


def test_it_starts_behind_then_returns_to_the_writers_niceness_once_caught_up_and_calm() -> None:
    nice, clock = Nice(0, floor=0), Clock()
    relay = priority(nice, clock=clock)
    assert nice.value == 10  # a backlog may wait since the last stop
    relay.follow(backlog=5000, caught_up=False)
    clock.now += 1
    relay.follow(backlog=5000, caught_up=False)  # still reading it
    assert nice.value == 10
    relay.follow(backlog=5000, caught_up=True)  # all read, but the burst was just now
    clock.now += CALM_SECONDS / 2
    relay.follow(backlog=2, caught_up=True)
    assert nice.value == 10
    clock.now += CALM_SECONDS / 2
    relay.follow(backlog=2, caught_up=True)
    assert nice.value == 0
    assert nice.calls == [10, 0]


def test_a_burst_puts_the_writer_first_until_it_has_been_calm_for_a_while() -> None:
    nice, clock = Nice(0, floor=0), Clock()
    relay = priority(nice, clock=clock)
    clock.now += CALM_SECONDS
    relay.follow(backlog=0, caught_up=True)
    for backlog in (1, 4, BEHIND_ROWS):  # the rows of a few notifications: stays
        relay.follow(backlog, caught_up=True)
        clock.now += 0.001
        relay.follow(backlog, caught_up=True)
        assert nice.value == 0
    relay.follow(BEHIND_ROWS + 1, caught_up=True)  # before the read: the writer first
    assert nice.value == 10
    for _ in range(100):  # a burst: small and large batches, caught up between them
        clock.now += 0.001
        relay.follow(3, caught_up=True)
        clock.now += 0.001
        relay.follow(BEHIND_ROWS * 2, caught_up=True)
        assert nice.value == 10
    clock.now += CALM_SECONDS
    relay.follow(3, caught_up=False)  # calm, but the last read did not reach the end
    assert nice.value == 10
    relay.follow(3, caught_up=True)
    assert nice.value == 0
    assert nice.calls == [10, 0, 10, 0]  # a call only at a change


def test_a_relay_nice_no_higher_than_the_writers_changes_nothing() -> None:
    for start, busy in ((0, 0), (5, 3)):
        nice = Nice(start)
        relay = priority(nice, busy)
        relay.follow(backlog=10_000, caught_up=False)
        relay.follow(backlog=0, caught_up=True)
        assert (relay.adaptive, nice.calls, nice.value) == (False, [], start)


def test_a_system_that_refuses_the_return_leaves_it_at_relay_nice_and_says_so_once() -> None:
    nice, clock = Nice(0, floor=10), Clock()  # no CAP_SYS_NICE, no RLIMIT_NICE
    relay = priority(nice, clock=clock)
    clock.now += CALM_SECONDS
    with structlog.testing.capture_logs() as logs:
        relay.follow(backlog=0, caught_up=True)
        relay.follow(backlog=0, caught_up=True)
        relay.follow(backlog=1000, caught_up=False)
    assert (relay.adaptive, nice.value, nice.calls) == (False, 10, [10, 0])
    assert [entry["event"] for entry in logs] == ["relay.priority_fixed"]


@pytest.mark.parametrize("start", [0, 19])
def test_a_system_that_refuses_even_the_first_step_leaves_it_as_it_is(start: int) -> None:
    nice = Nice(start)

    def refuse(value: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    with structlog.testing.capture_logs() as logs:
        clock = Clock()
        relay = Priority(10, get=nice.get, set_nice=refuse, monotonic=clock)
        clock.now += CALM_SECONDS
        relay.follow(backlog=0, caught_up=True)
    assert (relay.adaptive, relay.current) == (False, start)
    expected = ["relay.priority_unchanged"] if start < 10 else []
    assert [entry["event"] for entry in logs] == expected

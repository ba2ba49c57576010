"""The relay's window: the confirmed position moves only over an unbroken run of PUBACKs."""

from __future__ import annotations

from att_jm.relay.window import Window


def test_the_confirmed_position_moves_with_pubacks_in_order() -> None:
    window = Window(10)
    for mid, position in ((1, 11), (2, 12), (3, 13)):
        window.add(mid, position)
    assert (window.confirmed, len(window)) == (10, 3)
    window.ack(1)
    assert (window.confirmed, len(window)) == (11, 2)
    window.ack(2)
    window.ack(3)
    assert (window.confirmed, len(window)) == (13, 0)


def test_a_puback_out_of_order_waits_for_the_ones_before_it() -> None:
    window = Window(0)
    for mid in (7, 8, 9):
        window.add(mid, mid * 10)
    window.ack(9)
    window.ack(8)
    assert (window.confirmed, len(window)) == (0, 3)  # 7's PUBACK has not come
    window.ack(7)
    assert (window.confirmed, len(window)) == (90, 0)


def test_an_unknown_or_repeated_puback_changes_nothing() -> None:
    window = Window(5)
    window.add(1, 6)
    window.ack(42)
    assert (window.confirmed, len(window)) == (5, 1)
    window.ack(1)
    window.ack(1)
    assert (window.confirmed, len(window)) == (6, 0)


def test_message_ids_may_wrap_around() -> None:
    window = Window(100)
    window.add(65535, 101)
    window.add(1, 102)
    window.ack(1)
    window.ack(65535)
    assert window.confirmed == 102

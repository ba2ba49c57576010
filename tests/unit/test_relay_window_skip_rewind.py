"""The relay's window with positions published as nothing (`skip`) and read again
(`rewind`): the confirmed position still moves only over an unbroken run."""

from __future__ import annotations

from att_jm.relay.window import Window


def test_a_skipped_position_is_confirmed_with_the_ones_before_it() -> None:
    window = Window(10)
    window.add(1, 11)
    window.skip(12)
    window.add(2, 13)
    assert (window.confirmed, len(window)) == (10, 3)
    window.ack(1)
    assert (window.confirmed, len(window)) == (12, 1)  # 11 acked, 12 needed nothing
    window.ack(2)
    assert window.confirmed == 13
    window.skip(14)  # nothing waiting: confirmed at once
    assert (window.confirmed, len(window)) == (14, 0)


def test_rewind_forgets_the_newest_messages_from_a_position_on() -> None:
    window = Window(0)
    for mid, position in ((5, 1), (6, 2), (7, 3), (8, 4)):
        window.add(mid, position)
    window.skip(5)
    window.ack(8)  # acked, but not at the head
    assert window.position(7) == 3
    assert window.rewind(3) == [8, 7]  # the skip has no message id
    assert (len(window), window.position(7), 7 in window) == (2, None, False)
    window.ack(8)  # a late PUBACK of a forgotten message changes nothing
    window.ack(5)
    window.ack(6)
    assert (window.confirmed, len(window)) == (2, 0)
    window.add(9, 3)  # read and published again
    window.ack(9)
    assert window.confirmed == 3


def test_rewind_past_the_end_forgets_nothing() -> None:
    window = Window(3)
    window.add(1, 4)
    assert window.rewind(5) == []
    assert len(window) == 1

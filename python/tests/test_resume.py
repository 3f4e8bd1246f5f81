"""wshub.resume.Resume on its own: the since/epoch bookkeeping."""

from __future__ import annotations

from wshub.resume import Resume


def test_positions_start_a_room_and_events_move_it() -> None:
    resume = Resume()
    assert not resume.welcome("e1")
    assert resume.subscribe_message(["a"]) == {"type": "subscribe", "rooms": ["a"]}
    resume.subscribed({"epoch": "e1", "positions": {"a": 4, "other": 9}}, ["a"])
    assert resume.last == {"a": 4}
    assert resume.seen("a", 4) and not resume.seen("a", 5)
    resume.delivered("a", 5)
    assert resume.subscribe_message(["a", "b"]) == {
        "type": "subscribe", "rooms": ["a", "b"], "since": {"a": 5}, "epoch": "e1",
    }  # fmt: skip


def test_own_publishes_are_skipped_when_a_resume_replays_them() -> None:
    resume = Resume()
    resume.welcome("e")
    resume.subscribed({"positions": {"a": 0}}, ["a"])
    resume.published("a", 1)  # nothing before it: passed at once
    assert resume.last["a"] == 1
    resume.published("a", 3)  # seq 2 (someone else's) has not arrived yet
    assert resume.last["a"] == 1 and resume.seen("a", 3) and not resume.seen("a", 2)
    resume.delivered("a", 2)
    assert resume.last["a"] == 3 and resume.own["a"] == set()
    resume.published("untracked", 7)
    assert "untracked" not in resume.last


def test_a_recovered_room_keeps_its_position_and_a_lost_one_jumps() -> None:
    resume = Resume()
    resume.welcome("e")
    resume.subscribed({"positions": {"a": 2, "b": 2}}, ["a", "b"])
    resume.subscribed(
        {"positions": {"a": 10, "b": 10}, "recovered": {"a": True, "b": False}}, ["a", "b"]
    )
    assert resume.last == {"a": 2, "b": 10}


def test_a_new_epoch_forgets_every_position() -> None:
    resume = Resume()
    resume.welcome("e1")
    resume.delivered("a", 3)
    resume.published("a", 5)
    assert resume.welcome("e2")
    assert resume.last == {} and resume.own == {} and resume.epoch == "e2"
    assert resume.subscribe_message(["a"]) == {"type": "subscribe", "rooms": ["a"]}
    resume.forget("a")

"""The since/epoch bookkeeping of a resuming client (PROTOCOL.md section 4),
on its own: which seq each room was delivered up to, and which seqs were
the client's own publishes, so each event is delivered once, in order,
across reconnects."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional


class Resume:
    """Per room, the last seq delivered (or skipped), within one epoch.

    A room is *tracked* once its starting point is known: from the
    ``positions`` of a ``subscribed`` reply, or from its first event.
    """

    def __init__(self) -> None:
        self.epoch: Optional[str] = None
        #: The last seq delivered (or skipped) per room.
        self.last: dict[str, int] = {}
        #: Seqs of the client's own publishes past ``last``, per room: the
        #: hub never sends them to the client, but a resume replays them.
        self.own: dict[str, set[int]] = {}

    def welcome(self, epoch: Optional[str]) -> bool:
        """Takes a welcome's epoch; a new one restarts every seq, so the
        positions are forgotten. Returns whether the epoch changed."""
        changed = self.epoch is not None and epoch != self.epoch
        if changed:
            self.last.clear()
            self.own.clear()
        self.epoch = epoch
        return changed

    def subscribe_message(self, rooms: Iterable[str]) -> dict[str, Any]:
        """The ``subscribe`` that rejoins ``rooms``, with ``since`` (and
        ``epoch``) for every tracked one."""
        wanted = list(rooms)
        message: dict[str, Any] = {"type": "subscribe", "rooms": wanted}
        since = {room: self.last[room] for room in wanted if room in self.last}
        if since:
            message["since"] = since
            message["epoch"] = self.epoch
        return message

    def subscribed(self, payload: Mapping[str, Any], wanted: Iterable[str]) -> None:
        """Takes each wanted room's starting point from ``positions``, unless
        its missed events follow (``recovered``). A room that could not be
        recovered jumps to where the hub stands: the gap is lost."""
        if payload.get("epoch"):
            self.epoch = payload["epoch"]
        recovered = payload.get("recovered") or {}
        rooms = set(wanted)
        for room, seq in (payload.get("positions") or {}).items():
            if recovered.get(room) is True or room not in rooms:
                continue
            self.last[room] = max(self.last.get(room, 0), int(seq))
            self._advance(room)

    def seen(self, room: str, seq: int) -> bool:
        """Whether an event was delivered before (or is the client's own)."""
        last = self.last.get(room)
        return (last is not None and seq <= last) or seq in self.own.get(room, ())

    def delivered(self, room: str, seq: int) -> None:
        """Records an event handed to the consumer."""
        self.last[room] = seq
        self._advance(room)

    def published(self, room: str, seq: int) -> None:
        """Records the seq of the client's own publish to a tracked room."""
        if room in self.last and seq > self.last[room]:
            self.own.setdefault(room, set()).add(seq)
            self._advance(room)

    def tracked(self, room: str) -> bool:
        """Whether the room's position is known."""
        return room in self.last

    def forget(self, room: str) -> None:
        """Drops a room left for good."""
        self.last.pop(room, None)
        self.own.pop(room, None)

    def _advance(self, room: str) -> None:
        """Moves past the client's own publishes that now follow the last seq."""
        own = self.own.get(room)
        if not own:
            return
        last = self.last[room]
        while last + 1 in own:
            last += 1
        self.last[room] = last
        own.difference_update({s for s in own if s <= last})

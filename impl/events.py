"""The event sink: the spec actions the VMM performed, in order, each as (name, {parameter: value}).

What a conformance adapter reports after each step. The log is off (None) unless someone reads it:
every part of the VMM that performs a spec action (Vmm, Mmu, FlushDebt, Policies) holds this sink,
and none of them holds the VMM itself. With the log off, reporting costs one attribute test, and hot
paths test `events is not None` before building an event's arguments at all.
"""

from __future__ import annotations

from typing import Any

Event = tuple[str, dict[str, Any]]


class EventLog:
    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[Event] | None = None

    def emit(self, name: str, **args: Any) -> None:
        if self.events is not None:
            self.events.append((name, args))

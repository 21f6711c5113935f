"""Which redraw of the result views each browser session is on, so stale downloads are dropped.

Every event that redraws the overlay (a new photo, the slider, a preset, a click, a dab, undo,
clear) clears the download links and is followed by a downloads event that writes the files at
full resolution. Those writes run side by side: the write that follows an undo can finish after a
brush dab made since has already cleared the links, and would show the files of the outline
before the dab. A write therefore notes the session's redraw count when it starts and publishes
its files only if no redraw came since (the newer redraw's own write follows).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


def session_of(request: Any) -> str | None:
    """The browser session of a ``gr.Request`` (None for a direct call without one)."""
    return getattr(request, "session_hash", None) or None


class Redraws:
    """Redraw counts per session, the ``keep`` most recently active sessions kept (thread-safe)."""

    def __init__(self, keep: int = 4096):
        self.keep = keep
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def bump(self, request: Any) -> None:
        """Note one more redraw in ``request``'s session (nothing without a session)."""
        key = session_of(request)
        if key is None:
            return
        with self._lock:
            self._counts[key] = self._counts.pop(key, 0) + 1
            while len(self._counts) > self.keep:
                self._counts.popitem(last=False)

    def count(self, request: Any) -> int | None:
        """Redraws so far in ``request``'s session; None without a session."""
        key = session_of(request)
        if key is None:
            return None
        with self._lock:
            return self._counts.get(key, 0)


REDRAWS = Redraws()

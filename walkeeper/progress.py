"""The one progress line on stderr (rewritten with \\r, at most twice a second):
bytes done and rate, the share of an expected total with an ETA, and objects done
when counting objects. Safe to update from several threads."""

from __future__ import annotations

import sys
import threading
import time

from walkeeper.log import human_bytes


class Progress:
    def __init__(self, total: int | None, enabled: bool, what: str = "read",
                 objects: int | None = None):
        self.total = total or None
        self.enabled = enabled
        self.what = what
        self.objects = objects
        self.bytes = 0
        self.done = 0              # objects finished, when counting objects
        self.started = time.monotonic()
        self._shown = 0.0
        self._lock = threading.Lock()

    def update(self, n: int) -> None:
        """n more bytes done; redraw when half a second has passed."""
        with self._lock:
            self.bytes += n
        self.draw()

    def object_done(self) -> None:
        with self._lock:
            self.done += 1
        self.draw()

    def draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._shown < 0.5 and not force):
            return
        self._shown = now
        rate = self.bytes / max(now - self.started, 1e-6)
        text = f"{human_bytes(self.bytes)} {self.what}, {human_bytes(rate)}/s"
        if self.objects is not None:
            text = f"{self.done}/{self.objects} objects, " + text
        if self.total:
            pct = min(100.0, 100.0 * self.bytes / self.total)
            left = max(self.total - self.bytes, 0) / rate if rate > 0 else None
            eta = f"{int(left) // 60}:{int(left) % 60:02d}" if left is not None else "?"
            text += f", {pct:3.0f}% of ~{human_bytes(self.total)}, ETA {eta}"
        sys.stderr.write(f"\r{text:<72}")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            self.draw(force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()

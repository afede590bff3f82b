"""Concurrency limits for the expensive requests: each kind (a data preview, a config check
that reads the data, a doctor refresh, an adapter zip) runs at most
Settings.concurrent_per_kind at once; one more is answered 429 with Retry-After at once,
instead of holding a thread of the pool (and a helper process's memory) in a queue."""

from __future__ import annotations

import contextlib
import threading

from modelforge_ui.api.errors import ApiError

KINDS = {"preview": "data previews", "check": "config checks that read the data",
         "doctor": "environment checks", "zip": "adapter downloads"}
RETRY_AFTER_S = 5


class BusyLimits:
    def __init__(self, per_kind: int):
        self.per_kind = per_kind
        self._slots = {kind: threading.BoundedSemaphore(per_kind) for kind in KINDS}

    @contextlib.contextmanager
    def slot(self, kind: str):
        """Hold one of `kind`'s slots for the block, else raise the 429."""
        if not self._slots[kind].acquire(blocking=False):
            raise ApiError(429, "busy", f"The server is already running {self.per_kind} "
                                        f"{KINDS[kind]} at once.",
                           f"Try again in {RETRY_AFTER_S} s. The operator sets the limit with "
                           "--concurrent-per-kind (MODELFORGE_CONCURRENT_PER_KIND).",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            yield
        finally:
            self._slots[kind].release()

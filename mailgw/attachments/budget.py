"""The limits one message's inspection runs under, and what it has used of them."""

from __future__ import annotations

import time

from mailgw.config.settings import AttachmentLimits


class OverLimit(Exception):
    """The message as a whole went past a limit: it is too ambiguous to inspect.

    ``reason`` is English for admins ("MIME depth over 20").
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Budget:
    """Counters for one message, checked against its limits.

    Time is the CPU time of the calling thread (as in mailgw.classify.docread): a busy
    machine slows every thread, and a benign file must not fail because of it.
    """

    def __init__(self, limits: AttachmentLimits):
        self.limits = limits
        self.deadline = time.thread_time() + limits.time_budget
        self.decoded = 0          # decoded bytes of MIME parts
        self.members = 0          # files listed inside archives
        self.expanded = 0         # bytes decompressed out of archives

    def check_time(self) -> None:
        if time.thread_time() > self.deadline:
            raise OverLimit(f"time budget of {self.limits.time_budget:g} s used up")

    def add_decoded(self, size: int, location: str) -> None:
        self.decoded += size
        if self.decoded > self.limits.max_decoded_size:
            raise OverLimit(f"decoded parts over {self.limits.max_decoded_size} bytes (at part {location})")

    def members_left(self) -> int:
        return max(0, self.limits.max_archive_members - self.members)

    def bytes_left(self) -> int:
        return max(0, self.limits.max_archive_total - self.expanded)

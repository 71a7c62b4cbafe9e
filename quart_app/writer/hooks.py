"""The override points: where the records the writer cannot confirm go.

Like ``logging.handlers.QueueListener.handle``, they are methods a subclass
replaces; the writing loop calls them, on the event loop's thread. By default
each record is logged at ERROR, one line of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..records import LoginRecord, text_lines
from .base import WriterBase

LOG_LINES_PER_CALL = 1000
"""Records logged (abandoned or set aside) per call to the logger, one line each."""


class Hooks(WriterBase):
    """:meth:`abandon` and :meth:`set_aside`, for a subclass to override."""

    def abandon(self, records: Sequence[LoginRecord], reason: str) -> None:
        """Records that could not be confirmed written: each logged as one ERROR line.

        Override to send them elsewhere. The lines are in the text format,
        escaped, so one record is one line.
        """
        self._log_each(f"login log: NOT CONFIRMED WRITTEN ({reason}): ", records)

    def set_aside(self, records: Sequence[LoginRecord]) -> None:
        """Records the store set aside: each logged as one ERROR line.

        The store refused them for good, or cannot tell whether it took them;
        it logged why just before. Override to send them elsewhere.
        """
        self._log_each("login log: record set aside by the store (why: logged above): ", records)

    def _log_each(self, prefix: str, records: Sequence[LoginRecord]) -> None:
        # Each record is a line of its own that starts with ``prefix``, but one
        # log call carries up to LOG_LINES_PER_CALL of them: a stop must log
        # up to max_pending records within the margin its server leaves it.
        for start in range(0, len(records), LOG_LINES_PER_CALL):
            lines = text_lines(records[start : start + LOG_LINES_PER_CALL]).decode()
            self.logger.error("%s", "\n".join(prefix + line for line in lines.split("\n")[:-1]))

"""The writer: one task per app that hands batches of login records to a store.

Producers (the audit receiver) call :meth:`LogWriter.offer`, or
:meth:`LogWriter.submit` when they must wait, and never touch the store; the
writer task takes everything waiting as one group and
hands it to the store in batches, like ``logging.handlers.QueueListener`` but
async and batching. In durable mode the logins of a group share one future,
resolved once the group is written and synced (group commit). Without durable
mode a login is answered once queued only while the store keeps up; otherwise
it waits for its group to be written, as in durable mode without the sync, so
that a crash can lose no more than :attr:`LogWriter.lag_bound` seconds of
answered logins.

The modules, one job each:

* :mod:`.errors`: the refusals (:class:`LogUnavailable`, :class:`LogFull`)
  and the wording of an error;
* :mod:`.base`: the defaults and the state every part shares;
* :mod:`.intake`: the producers' side (offer, submit, group commit, refusing
  the logins that wait);
* :mod:`.loop`: the writing task (linger, batches, retries, sync, drain);
* :mod:`.hooks`: the override points, :meth:`LogWriter.abandon` and
  :meth:`LogWriter.set_aside`;
* :mod:`.health`: the figures (alive, oldest age, ledger, stats), readiness
  decided from them, and their publishing;
* :mod:`.logwriter`: :class:`LogWriter`, the parts put together, started and
  stopped.
"""

from .base import LAG_BOUND, LINGER, MAX_BATCH
from .errors import LogFull, LogUnavailable, describe_error
from .hooks import LOG_LINES_PER_CALL
from .logwriter import LogWriter

__all__ = [
    "LAG_BOUND",
    "LINGER",
    "LOG_LINES_PER_CALL",
    "MAX_BATCH",
    "LogFull",
    "LogUnavailable",
    "LogWriter",
    "describe_error",
]

"""Per-listener first and last event times of a feedback event log (what account trust is judged on)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

ACCOUNT_COLUMNS = ("first_ms", "last_ms", "events")
"""Columns of an event log's ``row_meta``: each listener's first and last event time
(epoch milliseconds) and number of events."""


def account_times(rows: np.ndarray, times_ms: np.ndarray, n_rows: int) -> pa.Table:
    """First and last event time and event count of each listener, aligned with the row ids.

    Parameters
    ----------
    rows : ndarray of int
        Listener index of each event.
    times_ms : ndarray of int64
        Time of each event, epoch milliseconds.
    n_rows : int
        Number of listeners (every index in ``rows`` is below it).

    Returns
    -------
    pyarrow.Table
        ``first_ms``, ``last_ms`` (int64) and ``events`` (int64), one row per listener.
    """
    times = times_ms.astype(np.int64, copy=False)
    first = np.full(n_rows, np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(n_rows, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(first, rows, times)
    np.maximum.at(last, rows, times)
    events = np.bincount(rows, minlength=n_rows).astype(np.int64)
    return pa.table(dict(zip(ACCOUNT_COLUMNS, (first, last, events), strict=True)))

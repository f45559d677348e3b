"""Log lines that report progress (an epoch, a heartbeat, a member fitted).

Pass ``extra=PROGRESS`` to ``log.info``: a command's log file has every INFO line; where
the console is no terminal (a batch job's redirected output), no progress bar is drawn,
so these lines are echoed there too (`experiments.logfile.FolderLog`) and a job that
runs for hours is not silent for hours.
"""

from __future__ import annotations

import logging

PROGRESS = {"progress": True}


def is_progress(record: logging.LogRecord) -> bool:
    """Whether ``record`` was logged with ``extra=PROGRESS``."""
    return bool(getattr(record, "progress", False))

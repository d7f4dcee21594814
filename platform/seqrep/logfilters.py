"""A filter on one library logger for the length of a `with` block (Ray's notices seqrep drops or
turns into errors: `seqrep.cluster`, `seqrep.ray_state`)."""

from __future__ import annotations

import contextlib
import logging


@contextlib.contextmanager
def filtering(logger_name: str, log_filter: logging.Filter):
    """Attach `log_filter` to the logger `logger_name` inside the block, and take it off after."""
    logger = logging.getLogger(logger_name)
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)

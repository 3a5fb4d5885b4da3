"""The one exception type of the data pipeline; entry scripts print its one-line message and exit non-zero."""
from __future__ import annotations


class DataError(ValueError):
    """Missing, malformed or unusable data; the message is a single line that names the culprit."""


class AudioError(DataError):
    """An audio file that cannot become a feature; `reason` is a short key used to count skipped files."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

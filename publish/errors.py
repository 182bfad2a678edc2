"""What can go wrong when publishing, as part of the one hierarchy of ``store.errors``.

    CorridorHubError (store.errors)
    └── PublishError           a dataset cannot be built or released (the message says why)
        ├── UnknownDataset     no dataset has this id (the message lists the valid ones)
        ├── BadDateRange       the date range is empty or reversed
        ├── NoData             the lake holds nothing for the dataset in the date range
        ├── NothingPublishable every cell was suppressed (k, dominance, complementary suppression)
        ├── UnsafeColumn       an output column derives from a lake column whose rule forbids that use
        ├── GateFailed         the privacy gate found problems in the output (``failures`` lists them)
        ├── DayNotClosed       a day of the range may not be published yet (publish_lateness_h)
        └── ReleaseExists      the version folder exists already: releases are immutable

The CLI prints the message on one line and exits non-zero; no partial release is left behind.
"""

from __future__ import annotations

from store.errors import CorridorHubError


class PublishError(CorridorHubError):
    """A dataset cannot be built or released; the message says why."""


class UnknownDataset(PublishError):
    """No dataset has this id."""


class BadDateRange(PublishError):
    """The date range is empty or reversed."""


class NoData(PublishError):
    """The lake holds nothing for the dataset in the date range."""


class NothingPublishable(PublishError):
    """Every cell was suppressed."""


class UnsafeColumn(PublishError):
    """An output column derives from a lake column whose publish rule forbids that use."""


class GateFailed(PublishError):
    """The privacy gate refused the output; ``failures`` holds one line per problem found."""

    def __init__(self, dataset_id: str, failures: list[str]) -> None:
        self.dataset_id = dataset_id
        self.failures = list(failures)
        shown = "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
        super().__init__(f"Privacy gate refused {dataset_id}: {shown}")


class DayNotClosed(PublishError):
    """A day of the range has not closed yet: it is published once, ``publish_lateness_h`` after it ends."""


class ReleaseExists(PublishError):
    """The version folder exists already: a release is never overwritten."""

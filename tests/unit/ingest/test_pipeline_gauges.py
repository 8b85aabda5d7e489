"""The pipeline gauges' arithmetic: consumer lag and jobs per status."""

from __future__ import annotations

from services.ingest.pipeline_gauges import PartitionOffsets, lag_of, status_counts


def test_lag_is_what_a_group_has_not_committed_summed_over_partitions() -> None:
    partitions = [PartitionOffsets(0, 10, 7), PartitionOffsets(0, 5, 5)]
    assert lag_of(partitions) == 3


def test_a_partition_never_committed_counts_from_its_low_watermark() -> None:
    assert lag_of([PartitionOffsets(low=4, high=10, committed=None)]) == 6


def test_a_commit_beyond_the_high_watermark_is_no_negative_lag() -> None:
    assert lag_of([PartitionOffsets(0, 3, 5)]) == 0


def test_every_status_is_reported_even_at_zero() -> None:
    counts = status_counts([("completed", 3), ("failed", 1)])
    assert counts == {
        "pending": 0,
        "splitting": 0,
        "interpolating": 0,
        "muxing": 0,
        "completed": 3,
        "completed_with_warnings": 0,
        "failed": 1,
        "cancelled": 0,
    }

"""The sweeper starts old objects without a job, and jobs whose start died half way; nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.ingest.sweeper import KnownJob, ListedObject, select_orphans, user_metadata

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
AGE = timedelta(minutes=2)


def _obj(key: str, age: timedelta, etag: str = "e1") -> ListedObject:
    return ListedObject(key=key, etag=etag, size=10, last_modified=NOW - age)


def test_old_objects_without_a_job_are_started() -> None:
    objects = [_obj("a.mp4", timedelta(minutes=5))]
    assert select_orphans(objects, {}, now=NOW, min_age=AGE) == objects


def test_young_objects_wait_for_their_event() -> None:
    assert select_orphans([_obj("a.mp4", timedelta(seconds=30))], {}, now=NOW, min_age=AGE) == []


def test_objects_with_a_job_are_left_alone() -> None:
    job = KnownJob(status="splitting", has_probe=True, updated_at=NOW - timedelta(hours=1))
    objects = [_obj("a.mp4", timedelta(minutes=5))]
    assert select_orphans(objects, {("a.mp4", "e1"): job}, now=NOW, min_age=AGE) == []


def test_a_replaced_object_is_a_new_orphan() -> None:
    job = KnownJob(status="completed", has_probe=True, updated_at=NOW - timedelta(hours=1))
    objects = [_obj("a.mp4", timedelta(minutes=5), etag="e2")]
    assert select_orphans(objects, {("a.mp4", "e1"): job}, now=NOW, min_age=AGE) == objects


def test_a_job_stuck_in_pending_without_a_probe_is_restarted_once_old() -> None:
    objects = [_obj("a.mp4", timedelta(minutes=10))]
    stuck = KnownJob(status="pending", has_probe=False, updated_at=NOW - timedelta(minutes=5))
    busy = KnownJob(status="pending", has_probe=False, updated_at=NOW - timedelta(seconds=5))
    started = KnownJob(status="pending", has_probe=True, updated_at=NOW - timedelta(minutes=5))
    failed = KnownJob(status="failed", has_probe=False, updated_at=NOW - timedelta(minutes=5))
    assert select_orphans(objects, {("a.mp4", "e1"): stuck}, now=NOW, min_age=AGE) == objects
    for job in (busy, started, failed):
        assert select_orphans(objects, {("a.mp4", "e1"): job}, now=NOW, min_age=AGE) == []


def test_folder_markers_are_not_videos() -> None:
    assert select_orphans([_obj("folder/", timedelta(hours=1))], {}, now=NOW, min_age=AGE) == []


def test_user_metadata_is_named_like_the_event_parser_names_it() -> None:
    headers = {
        "X-Amz-Meta-Multiplier": "4",
        "x-amz-meta-webhook-url": "http://h/x",
        "Content-Type": "video/mp4",
    }
    assert user_metadata(headers) == {"multiplier": "4", "webhook-url": "http://h/x"}

"""Bulk backfill's plan (shared/bulk.py): objects dealt to tasks by size, deterministically, each exactly once."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from shared import bulk
from shared.bulk import Plan, PlannedObject, _day


def plan(sizes: list[int], tasks: int) -> Plan:
    objects = [PlannedObject(f"o{i:03d}", "1", size) for i, size in enumerate(sizes)]
    return Plan("acme", "r1", "2026-12-03T00:00:00+00:00", tasks, "", objects)


@pytest.mark.parametrize("tasks", [1, 2, 3, 7])
def test_every_object_goes_to_exactly_one_task_and_the_bytes_are_balanced(tasks: int) -> None:
    # GIVEN 50 objects of random sizes
    rng = random.Random(tasks)
    p = plan([rng.randrange(1, 10_000_000) for _ in range(50)], tasks)
    # WHEN each task takes its share
    shares = [p.share(i) for i in range(tasks)]
    # THEN together they are every object once, and no task has more than the largest object above the lightest
    names = [o.name for share in shares for o in share]
    assert sorted(names) == sorted(o.name for o in p.objects) and len(names) == len(set(names))
    loads = [sum(o.size for o in share) for share in shares]
    assert max(loads) - min(loads) <= max(o.size for o in p.objects)
    # ... and the same plan deals the same way every time (a task run again reads the same objects)
    assert [p.share(i) for i in range(tasks)] == shares


def test_rows_are_filed_under_the_day_of_their_tables_partition_column() -> None:
    assert _day("events", {"timestamp": "2024-05-01T23:59:59.999999+00:00"}) == "2024-05-01"
    assert _day("user_properties", {"updated_at": "2024-05-02T00:00:00+00:00"}) == "2024-05-02"
    assert _day("rejected", {"rejected_at": "2026-12-03T10:00:00+00:00"}) == "2026-12-03"
    assert _day("user_properties", {"updated_at": None}) == "none"


class _Bucket:
    name = "b-acme-staging"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def blob(self, name: str) -> object:
        bucket = self

        class Blob:
            def upload_from_filename(self, filename: str, content_type: str) -> None:
                bucket.objects[name] = Path(filename).read_bytes()

        return Blob()


def test_staged_rows_are_uploaded_in_parts_as_they_fill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN parts of at most 100 bytes, and 25 rows of 10 bytes (with their newline) for one table and day, 3 for another
    monkeypatch.setattr(bulk, "PART_BYTES", 100)
    bucket = _Bucket()
    staging = bulk._Staging(tmp_path, bucket, "r1", 2)
    for i in range(25):
        staging.write(("events", "2024-05-01"), f"row-{i:05d}".encode())
    for i in range(3):
        staging.write(("rejected", "2026-12-03"), f"bad-{i:05d}".encode())
    # WHEN the task finishes
    files = staging.finish()
    # THEN each full part was uploaded as it filled and the rest at the end: every row once, in order, nothing left
    # on local disk, and the manifest lists each part with its rows
    names = sorted(bucket.objects)
    assert names == [f"bulk/r1/rows/events/2024-05-01/task-00002-{n:04d}.json" for n in range(3)] + [
        "bulk/r1/rows/rejected/2026-12-03/task-00002-0000.json"]
    events = b"".join(bucket.objects[n] for n in names[:3]).split()
    assert events == [f"row-{i:05d}".encode() for i in range(25)]
    assert [f["rows"] for f in files] == [10, 10, 5, 3] and not list(tmp_path.iterdir())
    assert files[0]["uri"] == f"gs://b-acme-staging/{names[0]}"

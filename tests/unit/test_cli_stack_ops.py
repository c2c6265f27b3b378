"""What `landline drop`, `wait` and `stats` compute without a stack: which files will be ignored, what one tenant
still waits for, and why files were not loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infra.local import router
from infra.local.router import RouterState
from infra.local.stack_ops import plan_drop
from infra.local.stats import format_stats

if TYPE_CHECKING:
    from pathlib import Path


def test_drop_knows_which_files_ingest_will_ignore(tmp_path: Path) -> None:
    # GIVEN an export whose data files sit under segment-logs/<source>/<day-ms>/
    day = tmp_path / "export" / "segment-logs" / "web" / "1764201600000"
    day.mkdir(parents=True)
    (day / "part-1.gz").write_bytes(b"x")
    # WHEN the export folder, the segment-logs folder itself (row 32) or one file is dropped
    whole = plan_drop([tmp_path / "export"], "")
    inner = plan_drop([tmp_path / "export" / "segment-logs"], "")
    single = plan_drop([day / "part-1.gz"], "")
    prefixed = plan_drop([day / "part-1.gz"], "segment-logs/web/1764201600000")
    # THEN only the names that keep the layout are data; the others are ignored with the reason ingest will give
    assert [(u.name, u.layout.is_data) for u in whole] == [("segment-logs/web/1764201600000/part-1.gz", True)]
    assert [(u.name, u.layout.reason) for u in inner] == [("web/1764201600000/part-1.gz", "not_segment_layout")]
    assert [u.layout.reason for u in single] == ["not_segment_layout"]
    assert [u.layout.is_data for u in prefixed] == [True]
    # AND a tenant prefix counts as ingest counts it
    assert [u.layout.reason for u in plan_drop([tmp_path / "export"], "", "acme")] == ["outside_tenant_prefix"]


def test_wait_for_one_tenant_ignores_the_others() -> None:
    # GIVEN one tenant's dropped file and another tenant's failing delivery
    state = RouterState(max_delivery_attempts=5)
    state.expect(["b-acme/segment-logs/a.gz#1"], "acme")
    with router._Delivery(state, "load_events", "m1", None, tenant="globex"):
        pass  # not ok: a failed attempt, awaiting a retry
    # THEN acme waits only for its file, globex only for its retry, and the stack for both
    acme, globex, everything = state.snapshot("acme"), state.snapshot("globex"), state.snapshot()
    assert (acme["expected_objects"], acme["awaiting_retry"], acme["failures"]) == (["b-acme/segment-logs/a.gz#1"], 0, {})
    assert (globex["expected_objects"], globex["awaiting_retry"], globex["failures"]) == ([], 1, {"load_events": 1})
    assert (everything["awaiting_retry"], len(everything["expected_objects"])) == (1, 1)
    # AND once acme's file is ingested, acme is idle whatever globex does
    with router._Delivery(state, "ingest_file", "m2", "b-acme/segment-logs/a.gz#1", tenant="acme") as delivery:
        delivery.ok = True
    assert state.snapshot("acme")["expected_objects"] == []
    assert state.snapshot("acme")["delivered"] == {"ingest_file": 1}


def test_the_tenant_of_a_topic() -> None:
    assert router.topic_tenant("raw-events.acme") == "acme"
    assert router.topic_tenant("send-ticks") is None


def test_stats_say_why_files_were_not_loaded() -> None:
    counts = {
        "files": {"loaded": 4, "ignored": 6, "rejected": 1},
        "file_reasons": {"ignored": {"not_segment_layout": 6}, "rejected": {"unsupported_encoding": 1}},
        "lines": 17, "file_lines": 17, "direct_lines": 0, "unaccounted": 0, "events": 8, "event_rows": 9,
        "user_property_rows": 1, "users": 1, "duplicates": 1, "rejected_lines": 7, "rejected": {}, "sends": {},
    }  # fmt: skip
    text = format_stats("uxs", counts)
    assert "ignored 6 (not_segment_layout 6)" in text
    assert "rejected 1 (unsupported_encoding 1)" in text
    assert "unaccounted  0" in text

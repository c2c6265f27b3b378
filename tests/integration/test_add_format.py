"""Adding a format takes one module: this one defines a toy format and loads a file of it end to end on the stack.

The toy format is NDJSON with its own field names (``who``/``what``/``when``/``ref``/``details``), read from the
bucket folder ``toy/``. It is registered the way a deployment adds a format without editing the registry:
``LANDLINE_FORMAT_MODULES`` names this module (``shared.sources.registry``), and the stack's processes can import it
because ``PYTHONPATH`` holds the repository. Both are set only for a private stack this module starts, so no other
test sees the toy format. A built-in format is the same module under ``shared/sources/`` plus one entry in
``registry.BUILT_IN`` (README, "Add a format").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter

from shared.sources.common import NonBlankStr, Timestamp, content_hash, to_utc, validate_record
from shared.sources.format import Format, event_row
from shared.sources.registry import EXTRA_MODULES_ENV
from tests.stack_support import StackHandle, free_port_base, unique

if TYPE_CHECKING:
    from collections.abc import Iterator

    from shared.sources.format import MappingContext, Row
    from shared.warehouse.rows import Lineage

pytestmark = pytest.mark.stack
REPO = Path(__file__).resolve().parents[2]


# -- the format: everything a new format needs ------------------------------------------------------------------------
class ToyEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    who: NonBlankStr
    what: NonBlankStr
    when: Timestamp
    ref: str | None = None
    details: dict[str, Any] | None = None


TOY_ADAPTER: TypeAdapter[ToyEvent] = TypeAdapter(ToyEvent)


class ToyFormat(Format):
    """``toy/<source>/<file>``: one ``{"who", "what", "when", "ref"?, "details"?}`` event a line."""

    name = "toy"
    layout_root = "toy"

    def map(self, raw: bytes, lineage: Lineage, ctx: MappingContext) -> Row:
        rec = validate_record(TOY_ADAPTER, raw, "what")
        ts = to_utc(rec.when)
        iid = rec.ref or content_hash(json.loads(raw))
        ctx.check_future(ts, lineage.received_at, iid)
        md = ctx.scrubber.scrub(rec.details) if rec.details else {}
        return event_row(rec.who, ts, rec.what, iid, lineage, None, md)


FORMAT = ToyFormat()


# -- the test ---------------------------------------------------------------------------------------------------------
GOOD = [
    {"who": "u1", "what": "Signed Up", "when": "2024-05-14T09:00:00Z", "ref": "t-1", "details": {"plan": "pro"}},
    {"who": "u2", "what": "Order Completed", "when": "2024-05-14T09:05:00+02:00", "details": {"email": "a@b.example"}},
    {"who": "u1", "what": "Logged In", "when": "2024-05-14T10:00:00Z", "ref": "t-3"},
]
BAD = [
    (b'{"who": "u3", "what": x}', "invalid_json"),
    (b'{"what": "No One", "when": "2024-05-14T09:00:00Z"}', "invalid_field"),  # "who" means nothing to the reason table
    (b'{"who": "u4", "what": "Later", "when": "2999-01-01T00:00:00Z"}', "future_timestamp"),
]
OBJECT = "toy/crm/2024-05-14.jsonl"


@pytest.fixture(scope="module")
def toy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    """A private stack whose processes (functions, CLI) read the toy format too."""
    from infra.local.stack import Stack

    with pytest.MonkeyPatch.context() as env:
        env.setenv(EXTRA_MODULES_ENV, __name__)
        env.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
        stack = Stack(home=tmp_path_factory.mktemp("toy-format-home"), port_base=free_port_base())
        try:
            stack.up(timeout=120)
            yield StackHandle(stack)
        finally:
            stack.down()


def test_a_format_defined_in_one_module_loads_a_file_end_to_end(toy_stack: StackHandle, tmp_path: Path) -> None:
    # GIVEN a tenant and a file of the toy format in its folder: good lines, a blank line (line 3) and bad lines
    tenant = toy_stack.add_tenant()
    path = tmp_path / unique("tree") / OBJECT
    path.parent.mkdir(parents=True)
    good = [json.dumps(record).encode() for record in GOOD]
    path.write_bytes(b"\n".join([good[0], good[1], b"", good[2], *(raw for raw, _ in BAD)]) + b"\n")

    # WHEN it is dropped into the tenant's bucket and the pipeline settles
    toy_stack.drop(tenant, path.parents[2])
    toy_stack.wait()

    # THEN ingest recognised the file by the format's own layout and read every line
    [file] = toy_stack.query(tenant, "SELECT object_name, status, lines, error FROM files_latest")
    assert (file["object_name"], file["status"], file["lines"], file["error"]) == (OBJECT, "loaded", 6, None)
    # AND the loader mapped the good lines with the format's mapper, scrubbed like every event
    events = toy_stack.query(
        tenant,
        "SELECT contact_id, event_name, event_instance_id, source_format, line_number, TO_JSON_STRING(metadata) AS md "
        "FROM events ORDER BY line_number",
    )
    assert [(e["contact_id"], e["event_name"], e["source_format"], e["line_number"]) for e in events] == [
        ("u1", "Signed Up", "toy", 1),
        ("u2", "Order Completed", "toy", 2),
        ("u1", "Logged In", "toy", 4),
    ]
    assert events[0]["event_instance_id"] == "t-1" and json.loads(events[0]["md"]) == {"plan": "pro"}
    assert "a@b.example" not in events[1]["md"]
    # AND each bad line is one rejection with its reason, at its line, and the stats equation holds
    rejected = toy_stack.query(tenant, "SELECT line_number, reason_code, source_format FROM rejected ORDER BY 1")
    assert [(r["line_number"], r["reason_code"], r["source_format"]) for r in rejected] == [
        (5 + i, reason, "toy") for i, (_, reason) in enumerate(BAD)
    ]
    stats = toy_stack.stats(tenant)
    assert (stats["lines"], stats["events"], stats["rejected_lines"]) == (6, 3, 3)

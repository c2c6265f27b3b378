"""The loader's pure core: raw lines -> validated, mapped, PII-free rows or rejected rows (no I/O)."""

from __future__ import annotations

from shared.load.parse import LineParser, ParsedBatch, parse_line, parse_lines, rejected_row
from shared.sources.common import RejectReason

__all__ = ["LineParser", "ParsedBatch", "RejectReason", "parse_line", "parse_lines", "rejected_row"]

"""``python -m infra.local.fakes --port-base N --state-dir D``."""

from __future__ import annotations

from infra.local.fakes.server import main

main()

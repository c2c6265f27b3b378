"""The formats the product reads, in one place: ingest (which files are whose, how to read them), load (how a line
maps) and the CLI read them here, never a format's name.

Adding a format is one new module (``shared/sources/<name>.py`` with a ``Format`` subclass and ``FORMAT``) and one
entry in ``BUILT_IN`` below (README, "Add a format"). Order matters once: an object is the first format's that
``locate``s it, so Segment (whose root may sit below other folders) is asked before the top-level roots.

``LANDLINE_FORMAT_MODULES`` (comma-separated module names, each with a ``FORMAT``) adds formats without editing this
file: for a deployment's own formats, and for the test that proves a new format needs nothing else
(tests/integration/test_add_format.py). The variable is read once per process, when the registry is first used.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache
from typing import TYPE_CHECKING

from shared.errors import SetupError
from shared.sources import amplitude, csv_export, mixpanel, native, segment

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from shared.sources.format import Format, ObjectLayout

BUILT_IN: tuple[Format, ...] = (segment.FORMAT, native.FORMAT, mixpanel.FORMAT, amplitude.FORMAT, csv_export.FORMAT)
EXTRA_MODULES_ENV = "LANDLINE_FORMAT_MODULES"
DEFAULT_FORMAT = "native"  # the format of a message that names none (a direct publisher's)


def _extra_formats() -> list[Format]:
    names = [n.strip() for n in os.environ.get(EXTRA_MODULES_ENV, "").split(",") if n.strip()]
    found: list[Format] = []
    for module_name in names:
        fmt = getattr(importlib.import_module(module_name), "FORMAT", None)
        if fmt is None:
            raise SetupError(
                f"{EXTRA_MODULES_ENV} names module {module_name!r}, which has no FORMAT",
                "define FORMAT = <YourFormat>() in it (shared/sources/format.py), or remove it from the variable",
            )
        found.append(fmt)
    return found


@lru_cache(maxsize=1)
def formats() -> Mapping[str, Format]:
    """Every format by name, built-in first; a name or layout root used twice is a setup error."""
    by_name: dict[str, Format] = {}
    roots: dict[str, str] = {}
    for fmt in (*BUILT_IN, *_extra_formats()):
        if fmt.name in by_name or fmt.name == "ignored":
            raise SetupError(f"two formats are named {fmt.name!r}", "give the new format a name of its own")
        root = fmt.layout_root
        if root is not None and root in roots:
            raise SetupError(
                f"formats {roots[root]!r} and {fmt.name!r} both read the bucket folder {root!r}",
                "give the new format a layout_root of its own",
            )
        by_name[fmt.name] = fmt
        if root is not None:
            roots[root] = fmt.name
    return by_name


def names() -> tuple[str, ...]:
    return tuple(formats())


def get(name: str) -> Format | None:
    """The format called ``name`` (a message's ``format`` attribute), or None if there is none."""
    return formats().get(name)


def locate(parts: Sequence[str]) -> ObjectLayout | None:
    """The layout of an object (its name after the tenant's prefix, split on ``/``) from the first format that
    claims it; None if none does."""
    for fmt in formats().values():
        found = fmt.locate(parts)
        if found is not None:
            return found
    return None


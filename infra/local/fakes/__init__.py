"""Fake push providers for the local stack and the tests (never deployed). See ``server.py``."""

from __future__ import annotations

PORT_OFFSETS = {"fcm": 0, "apns": 1, "onesignal": 2, "braze": 3, "expo": 4}

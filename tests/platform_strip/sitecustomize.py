"""Strips the interpreter at start-up when ``TSR_STRIP_PLATFORM=1`` (see
``tsr_strip_platform``); does nothing otherwise."""

import random  # noqa: F401  (before the strip: it calls os.register_at_fork at import)

import tsr_strip_platform

if tsr_strip_platform.requested():
    tsr_strip_platform.strip()

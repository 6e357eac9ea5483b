"""The optional C helper, `llmtools._speedups` (src/llmtools/_speedups.c).

setup.py builds it when a C compiler is there. Without it (or with LLMTOOLS_PURE_PYTHON=1)
every caller runs its pure-Python version of the same code, with the same output: the Python
versions are the reference, and the tests compare the two. What it speeds up: normalize's text
checks and its plain rewrites (about twice the records per second), and the shared JSONL
reader's big-integer guard.
"""

from __future__ import annotations

import os


def _load():  # noqa: ANN202 - (the C module or None, a word on why, for --version)
    if os.environ.get("LLMTOOLS_PURE_PYTHON", "") not in ("", "0"):
        return None, "off (LLMTOOLS_PURE_PYTHON is set)"
    try:
        from llmtools import _speedups
    except ImportError:
        return None, "not built (no C compiler at install?): pure Python, same output, slower"
    return _speedups, "in use"


SPEEDUPS, STATUS = _load()

"""Skip a test that needs a system package the machine lacks, naming the package and the fix.

The packages come from scripts/sysdeps.txt, the list `make sysdeps` installs, so a skip reason
here and the set-up step cannot disagree. CI sets LLMTOOLS_NO_SKIP=1, which turns these skips
into failures (tests/conftest.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

LIST = Path(__file__).resolve().parents[2] / "scripts" / "sysdeps.txt"


def entries() -> dict[str, dict[str, str]]:
    """name -> {targets, check, packages, uses}, parsed from scripts/sysdeps.txt."""
    out = {}
    for line in LIST.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, targets, check, packages, uses = (part.strip() for part in line.split("|", 4))
        out[name] = {"targets": targets, "check": check, "packages": packages, "uses": uses}
    return out


def _present(check: str) -> bool:
    if check.startswith("command:"):
        return shutil.which(check.split(":", 1)[1]) is not None
    if check == "wordnet":
        from llmtools.errors import MissingDependency

        from llmtools.ops.augment.wordnet import load_wordnet

        try:
            load_wordnet()
        except MissingDependency:
            return False
        return True
    if check.startswith("java:"):
        import re
        import subprocess

        try:
            out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
        found = re.search(r'version "(\d+)', out.stderr + out.stdout)
        return bool(found) and int(found.group(1)) >= int(check.split(":", 1)[1])
    raise ValueError(f"unknown check {check!r} in {LIST}")


def skip_reason(name: str) -> str:
    entry = entries()[name]
    return (f"needs the system package(s) {entry['packages']} ({entry['uses']}); "
            f"install with `make sysdeps` or `sudo apt-get install -y {entry['packages']}`")


def require(name: str) -> None:
    """Skip the calling test, saying which system package it lacks, unless `name` is present."""
    if not _present(entries()[name]["check"]):
        pytest.skip(skip_reason(name))

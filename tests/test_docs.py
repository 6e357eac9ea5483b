"""man/ and completions/ are generated from the click tree; this fails when they are stale."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_docs_are_up_to_date(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stale = []
    for rel in proc.stdout.split():
        committed = ROOT / rel
        if not committed.exists() or not filecmp.cmp(committed, tmp_path / rel, shallow=False):
            stale.append(rel)
    assert not stale, f"run `make docs`: stale or missing {stale}"
    man_pages = sorted(os.listdir(ROOT / "man"))
    assert "llmtools.1" in man_pages and "llmtools-normalize.1" in man_pages


def test_man_page_renders(tmp_path):
    page = (ROOT / "man" / "llmtools.1").read_text()
    assert page.startswith('.TH "LLMTOOLS" "1"') and ".SH EXIT STATUS" in page


def test_readme_sections_are_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_readme.py"), "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

#!/usr/bin/env python3
"""Assemble the per-command sections of README.md from docs/<command>.md.

    python scripts/build_readme.py          # rewrite README.md between the markers
    python scripts/build_readme.py --check  # exit 1 if README.md is out of date

docs/<command>.md is where each command's section is edited; README.md holds them between
`<!-- commands -->` and `<!-- /commands -->`, in lifecycle order.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ("normalize", "dedup", "augment", "finetune", "score", "quantize", "serve", "watch", "models")
START, END = "<!-- commands -->", "<!-- /commands -->"


def render() -> str:
    readme_path = os.path.join(ROOT, "README.md")
    with open(readme_path, encoding="utf-8") as fh:
        readme = fh.read()
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END) if END in rest else ("", "", rest)
    sections = []
    for name in ORDER:
        with open(os.path.join(ROOT, "docs", f"{name}.md"), encoding="utf-8") as fh:
            sections.append(fh.read().strip() + "\n")
    body = "\n".join(sections)
    return f"{head}{START}\n<!-- generated from docs/*.md by scripts/build_readme.py; edit those files -->\n\n{body}\n{END}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = render()
    path = os.path.join(ROOT, "README.md")
    with open(path, encoding="utf-8") as fh:
        current = fh.read()
    if args.check:
        if current != text:
            print("README.md is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

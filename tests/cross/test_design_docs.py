"""The design in docs/ stays reachable from the code that cites it (issue 12, docs/README.md).

Docstrings cite the page whose rule they implement ("docs/rounds.md"); the old citations of a
design document kept outside the repository ("docs/rounds.md") pointed at text nobody could open.
These tests keep both true: every cited page exists, no old-style citation comes back, and the
relative links between the Markdown pages resolve.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.support import REPO

ROOT = REPO
#: Folders that hold our sources and notes (not .venv, .tools, caches or build output).
SCANNED = ("abci_app", "training", "watermark", "dlbc_ops", "tests", "bench", "docs", "cometbft")
SUFFIXES = (".py", ".md", ".proto", ".sh", ".toml")
CITATION = re.compile(r"\bdocs/([A-Za-z0-9_-]+\.md)\b")
OLD_CITATION = re.compile(r"DESIGN(?:\.md)?\s*§\s*\d")
MD_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _files() -> list[Path]:
    out = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for top in SCANNED:
        for dirpath, dirnames, filenames in os.walk(ROOT / top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
            out += [Path(dirpath) / f for f in filenames if f.endswith(SUFFIXES)]
    return sorted(p for p in out if p.is_file() and p != Path(__file__).resolve())


def test_every_cited_design_page_exists() -> None:
    missing = []
    for path in _files():
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for page in CITATION.findall(line):
                if not (ROOT / "docs" / page).is_file():
                    missing.append(f"{path.relative_to(ROOT)}:{i}: docs/{page}")
    assert not missing, "citations of design pages that do not exist:\n" + "\n".join(missing)


def test_no_old_design_citations_remain() -> None:
    # docs/README.md keeps the map from the old section numbers, so it may name them.
    stale = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in _files() if path != ROOT / "docs" / "README.md"
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OLD_CITATION.search(line)
    ]
    assert not stale, "cite docs/<page>.md instead (map: docs/README.md):\n" + "\n".join(stale)


def test_markdown_links_between_pages_resolve() -> None:
    pages = [ROOT / "README.md", ROOT / "cometbft" / "README.md", *sorted(ROOT.glob("docs/*.md"))]
    broken = []
    for page in pages:
        for target in MD_LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_design_index_lists_every_page() -> None:
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    unlisted = [p.name for p in sorted(ROOT.glob("docs/*.md"))
                if p.name != "README.md" and f"]({p.name})" not in index]
    assert not unlisted, f"docs/README.md does not list: {unlisted}"

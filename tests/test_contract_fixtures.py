"""Contract fixtures: every platform file in config/platforms reads its saved pages as written by hand.

``tests/fixtures/<platform>/expected.yaml`` lists, per saved page, the stated total, each card's listing key,
locations, region codes and linkage value, the 'no results' marker and the next link or cursor; the pages go
through the crawl's own extraction (``crawlers.preview.read_page``). A site redesign shows up here as a failing
test naming the page and the field, before any crawl. All values are synthetic (see tests/fixtures/README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from crawlers.preview import read_page
from pointcount.config import REPO_CONFIG_DIR, load_platform

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PLATFORM_FILES = sorted((REPO_CONFIG_DIR / "platforms").glob("*.yaml"))


def test_every_platform_file_has_fixtures() -> None:
    assert PLATFORM_FILES
    missing = [p.stem for p in PLATFORM_FILES if not (FIXTURES / p.stem / "expected.yaml").is_file()]
    assert missing == [], f"add saved pages and expected.yaml under tests/fixtures/ for {missing}"


def _cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for path in PLATFORM_FILES:
        expected = FIXTURES / path.stem / "expected.yaml"
        if expected.is_file():
            cases += [(path.stem, page) for page in yaml.safe_load(expected.read_text())["pages"]]
    return cases


@pytest.mark.parametrize(("name", "want"), _cases(), ids=[f"{n}/{p['file']}" for n, p in _cases()])
def test_saved_page_reads_as_expected(name: str, want: dict[str, Any]) -> None:
    platform = load_platform(REPO_CONFIG_DIR / "platforms" / f"{name}.yaml")
    read = read_page(platform, (FIXTURES / name / want["file"]).read_text(encoding="utf-8"))
    assert read.stated == want["total"]
    assert read.empty_marker is want["empty_marker"]
    assert read.next == want["next"]
    got = [{k: v for k, v in card.items() if v} for card in read.cards]  # fields without a value left out
    expected = [{k: [v] if k in ("listing_key", "linkage") else v for k, v in card.items()} for card in want["cards"]]
    assert got == expected


def test_every_saved_page_is_checked() -> None:
    """No saved page lies in a fixture folder without its expectations (it would test nothing)."""
    listed = {(n, p["file"]) for n, p in _cases()}
    saved = {(d.name, f.name) for d in FIXTURES.iterdir() if d.is_dir() for f in d.iterdir()
             if f.name != "expected.yaml"}
    assert saved == listed

"""report.html in a real headless Chromium: the DOM shows the regional table, the map image and the provenance,
and the rendered page really shows the map. The screenshot is kept at tests/artifacts/report.png for people.

Needs Debian's chromium (``make test`` installs it when absent).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.image import imread
from test_publish import (  # the same synthetic warehouse as the publish tests
    build_warehouse,
    configured,
    visible_numbers,
)

from publish import publish_run
from publish.maps import CMAP

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
WINDOW = (1280, 7800)  # tall enough for the whole page: the screenshot is for people to read


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium not found: `make test` installs Debian's chromium (apt-get install chromium)")


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )


class Dom(HTMLParser):
    """Just enough of the rendered DOM: elements by id, table rows, images, text of the provenance list."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str | None]] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self.images: list[dict[str, str | None]] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._section: str | None = None
        self.sections: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids[a["id"]] = a
        if tag == "section":
            self._section = a.get("id")
        if tag == "table":
            self._table = a.get("id")
            self.rows.setdefault(self._table or "", [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join(" ".join(self._cell).split()))  # <br> separates words
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.rows[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._section:
            self.sections.setdefault(self._section, []).append(data)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("browser")
    config = configured(tmp)
    runs = build_warehouse(config.warehouse_path)
    out = publish_run(config)
    url = (out / "report.html").as_uri()
    dom = run_chromium(["--dump-dom", url], tmp / "profile-dom").stdout
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    run_chromium([f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}", url], tmp / "profile-shot")
    parser = Dom()
    parser.feed(dom)
    return {"dom": dom, "parsed": parser, "shot": shot, "runs": runs, "out": out}


def test_dom_shows_the_regional_table(rendered: dict) -> None:
    dom: Dom = rendered["parsed"]
    rows = dom.rows["region-table"]
    header, body = rows[0], rows[1:]
    assert header[:3] == ["Region", "Code", "Adverts"]
    names = [r[0] for r in body]
    for region in ("North East", "London", "Wales", "Scotland", "Northern Ireland", "United Kingdom"):
        assert region in names
    assert len([r for r in body if re.fullmatch(r"TL[C-N]", r[1])]) == 12
    uk = body[names.index("United Kingdom")]
    assert re.fullmatch(r"\d{1,3}(,\d{3})*", uk[2])  # a published count with thousands separators
    for row in body:  # every count cell: a rounded count, [c] (suppressed) or [x] (not covered); never 1..9
        for cell in [row[2], row[4], *row[6:]]:
            assert cell in ("[c]", "[x]") or (cell.replace(",", "").isdigit() and int(cell.replace(",", "")) % 5 == 0
                                               and not 0 < int(cell.replace(",", "")) < 10), (row, cell)
    # Northern Ireland: only the count-only platform was counted there, so its card listings and advertisers were
    # not measured ([x], never a zero), while its stated listings (another unit) are shown.
    ni = body[names.index("Northern Ireland")]
    assert (ni[2], ni[4]) == ("[x]", "[x]") and re.fullmatch(r"\d{1,3}(,\d{3})*", ni[6])
    assert header[6:8] == ["Stated listings", "Unlinked listings"]


def test_dom_shows_the_map_image_and_provenance(rendered: dict) -> None:
    dom: Dom = rendered["parsed"]
    img = dom.ids["map-all"]
    assert (img.get("src") or "").startswith("data:image/png;base64,")
    assert all((i.get("src") or "").startswith("data:image/png;base64,") for i in dom.images)
    assert len(dom.images) >= 7
    prov = " ".join(dom.sections["provenance"])
    runs = rendered["runs"]
    for text in (runs["partial"], "cfg0123456789abc", "0.1.0+test", "2026-11-21", "partial"):
        assert text in prov, text
    platforms = dom.rows["platform-table"]
    health = {r[0].split()[-1]: r[2] for r in platforms[1:]}
    assert health["sandbox-api"] == "site_changed" and health["sandbox-directory"] == "ok"
    assert [r[1] for r in dom.rows["trend-table"][1:]] == [runs["first"], runs["partial"]]
    assert "Open Government Licence" in " ".join(dom.sections["attribution"])


def test_screenshot_shows_the_rendered_map(rendered: dict) -> None:
    shot: Path = rendered["shot"]
    image = imread(shot)[:, :, :3]
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    # The map's colours cover a real area of the page: the embedded PNG was decoded and painted.
    # The scale's pale end is left out: it is too close to the page's own light greys (checked: without the
    # images this count is about 2,500; with them about 55,000).
    palette = colormaps[CMAP](np.linspace(0.2, 1, 64))[:, :3]
    sample = image[::3, ::3].reshape(-1, 3)
    distance = np.min(np.abs(sample[:, None, :] - palette[None, :, :]).max(axis=2), axis=1)
    painted = int((distance < 0.03).sum()) * 9  # every 3rd pixel both ways was sampled
    assert painted > 25_000, painted
    assert (sample < 0.9).any(axis=1).mean() > 0.05  # not a blank page


def test_rendered_page_shows_no_count_from_one_to_nine(rendered: dict) -> None:
    """The text Chromium renders (after parsing, entities decoded): integers are 0 or at least 10 once dates,
    run ids, the rule's parameters and the other whitelisted non-counts (test_publish.NON_COUNTS) are removed."""
    runs = rendered["runs"]
    numbers = visible_numbers(rendered["dom"], (*runs.values(), "cfg0123456789abc", "0.1.0+test"))
    integers = [int(v.replace(",", "")) for v in numbers if "." not in v]
    assert len(integers) > 50
    assert not [v for v in integers if 0 < v < 10]
    alarms = " ".join(rendered["parsed"].sections["alarms"])
    assert "→ [c] listings" in alarms and "%" not in alarms

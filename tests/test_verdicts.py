"""Per-cell verdicts (crawlers/verdicts.py) on hand-built walks: the expected outcomes are worked out by hand."""

from __future__ import annotations

import pytest

from crawlers.verdicts import OUTAGE, CellVerdict, PageSeen, Tolerance, WalkSeen, cell_verdict, platform_health


def cards(*pages: PageSeen, distinct: int | None = None, expects_total: bool = True, **kw: object) -> CellVerdict:
    n = sum(p.cards for p in pages) if distinct is None else distinct
    return cell_verdict(WalkSeen("cards", tuple(pages), distinct=n, expects_total=expects_total, **kw))  # type: ignore[arg-type]


def test_true_zeros_need_a_stated_zero_or_the_marker() -> None:
    assert cards(PageSeen(stated=0)) == CellVerdict(True, count=0, zero_by="stated")
    # The marker alone: no total printed on an empty page is not a missing total.
    assert cards(PageSeen(empty_marker=True)) == CellVerdict(True, count=0, zero_by="marker")
    assert cards(PageSeen(empty_marker=True), expects_total=False).zero_by == "marker"
    # Neither: a renamed slug or a redesign answering 200 is never a zero.
    v = cards(PageSeen())
    assert not v.measured and v.failure == "site_changed" and v.reason == "no cards and no no-results marker"
    v = cards(PageSeen(stated=12, empty_marker=True))
    assert v.reason == "no cards where the total says there are some"
    # Count mode: the marker alone is a zero there too.
    assert cell_verdict(WalkSeen("count", (PageSeen(empty_marker=True),))) == CellVerdict(True, 0, "marker")
    assert cell_verdict(WalkSeen("count", (PageSeen(),))).reason == "total missing"
    assert cell_verdict(WalkSeen("count", (PageSeen(stated=7),))).count == 7


def test_a_missing_total_on_a_page_with_cards_is_a_site_change() -> None:
    assert cards(PageSeen(cards=3)).reason == "total missing"
    assert cards(PageSeen(cards=3), expects_total=False) == CellVerdict(True, count=3)


def test_churn_within_the_tolerance_is_measured() -> None:
    # The example: 101 stated, two full pages of 50, page 3 empty (one advert withdrawn mid-walk).
    v = cards(PageSeen(stated=101, cards=50), PageSeen(stated=101, cards=50), PageSeen(stated=101, cards=0))
    assert v.measured and v.count == 100 and "empty last page" in v.tolerated
    # A total that moved 101 -> 102 and an advert repeated across pages (a new one pushed the list down).
    v = cards(PageSeen(stated=101, cards=50), PageSeen(stated=102, cards=50), PageSeen(stated=102, cards=2),
              distinct=101)
    assert v.measured and v.count == 101
    assert "total moved 101→102" in v.tolerated and "1 repeated across pages" in v.tolerated
    # allowed(101) = max(2, floor(0.02 × 101) = 2) = 2: 99 is in, 98 is out.
    assert cards(PageSeen(stated=101, cards=50), PageSeen(stated=101, cards=49)).measured
    assert cards(PageSeen(stated=101, cards=50), PageSeen(stated=101, cards=48)).reason == \
        "pages short of the stated total"
    assert cards(PageSeen(stated=10, cards=13)).reason == "more cards than the stated total"
    # A page parameter the site ignores: every page the same cards.
    v = cards(PageSeen(stated=150, cards=50), PageSeen(stated=150, cards=50), PageSeen(stated=150, cards=50),
              distinct=50)
    assert v.reason == "pages short of the stated total"
    v = cards(PageSeen(cards=50), PageSeen(cards=50), distinct=50, expects_total=False)
    assert v.reason == "listings repeated across pages"
    # A wider tolerance is a setting.
    walk = WalkSeen("cards", (PageSeen(stated=1000, cards=950),), distinct=950, expects_total=True)
    assert not cell_verdict(walk).measured and cell_verdict(walk, Tolerance(churn_share=0.05)).measured


@pytest.mark.parametrize(("page", "first", "kind", "reason"), [
    (PageSeen(status=404), True, "site_changed", "HTTP 404 on the listing page"),
    (PageSeen(status=404), False, "site_changed", "HTTP 404 on the next page"),
    (PageSeen(status=410), False, "site_changed", "HTTP 410 on the next page"),
    (PageSeen(status=503), False, "transient", "HTTP 503 on the next page"),
    (PageSeen(status=0, error="TimeoutError"), True, "transient", "TimeoutError on the listing page"),
    (PageSeen(status=403), True, "blocked", "HTTP 403 on the listing page"),
    (PageSeen(problem="truncated"), True, "site_changed", "listing page truncated"),
    (PageSeen(cards=3, keyless=1, stated=3), True, "site_changed", "card without listing key"),
])
def test_a_bad_page_fails_its_cell_with_a_kind(page: PageSeen, first: bool, kind: str, reason: str) -> None:
    pages = (page,) if first else (PageSeen(stated=120, cards=50), page)
    v = cards(*pages, distinct=50)
    assert (v.measured, v.failure, v.reason, v.transient) == (False, kind, reason, kind == "transient")


def test_walk_ends() -> None:
    one = PageSeen(stated=120, cards=50)
    assert cards(one, ended="loop").reason == "pagination loops"
    assert cards(one, ended="refused", ended_reason="pagination points off the platform's origin").reason == \
        "pagination points off the platform's origin"
    assert cards(one, ended="max_pages").failure == "stopped"
    assert cards(ended="stopped", ended_reason="request budget spent").reason == "request budget spent"


def test_platform_health_summarises_the_cells() -> None:
    good, zero = CellVerdict(True, count=5), CellVerdict(True, count=0, zero_by="marker")
    gone = CellVerdict(False, failure="site_changed", reason="HTTP 404 on the listing page")
    busy = CellVerdict(False, failure="transient", reason="HTTP 503 on the listing page")
    assert platform_health([good] * 41 + [zero] * 7) == ("ok", "48 cells measured")  # the platform
    assert platform_health([good] * 47 + [gone]) == (
        "partial", "1 of 48 cells not measured: HTTP 404 on the listing page ×1")
    assert platform_health([good] * 36 + [gone] * 12)[0] == "partial"  # 25 %: still partial
    assert platform_health([good] * 35 + [gone] * 13)[0] == "site_changed"  # over 25 %
    assert platform_health([good] * 35 + [busy] * 13)[0] == "unreachable"
    assert platform_health([good] * 35 + [gone] * 13, tol=Tolerance(max_failed_share=0.5))[0] == "partial"
    assert platform_health([gone] * 3)[0] == "site_changed"  # none parsed
    assert platform_health([busy] * 3, pages_ok=0)[0] == "unreachable"
    assert platform_health([zero] * 48)[0] == "site_changed"  # a whole platform at zero is not believed
    assert platform_health([good, gone], blocked="5 refusals in a row")[0] == "blocked"
    assert platform_health([good, gone], exhausted="request budget of 10 spent")[0] == "budget_exhausted"
    assert platform_health([good] * 2, spider_exceptions=1)[0] == "failed"


def test_a_server_that_dies_mid_crawl_leaves_a_partial_platform() -> None:
    """An outage (crawlers/middlewares.py: POINTCOUNT_UNREACHABLE_AFTER failures in a row after some page answered):
    the unfinished cells fail transient; the platform is partial whatever the share, so the measured cells load."""
    good, zero = CellVerdict(True, count=5), CellVerdict(True, count=0, zero_by="stated")
    down = cell_verdict(WalkSeen("cards", (PageSeen(stated=60, cards=50),), distinct=50, ended="outage"))
    assert down == CellVerdict(False, failure="transient", reason=OUTAGE)  # a read page 1 does not make it measured
    assert cell_verdict(WalkSeen("cards", ended="outage")).failure == "transient"  # never asked for
    # The first page failing decides first, as for any walk.
    assert cards(PageSeen(status=500), ended="outage").reason == "HTTP 500 on the listing page"
    why = f"{OUTAGE}: 8 listing requests failed in a row (HTTP 500) after 20 answered"
    health, reason = platform_health([good] * 20 + [down] * 28, outage=why)
    assert health == "partial" and reason == f"{why}; 28 of 48 cells not measured: {OUTAGE} ×28"
    # Control: the same cells without the outage (transient failures while the server kept answering).
    assert platform_health([good] * 20 + [down] * 28)[0] == "unreachable"
    # Down before any cell was measured: nothing to keep, the flow may retry the whole platform.
    assert platform_health([down] * 48, outage=why) == ("unreachable", why)
    assert platform_health([down] * 48, outage=why, pages_ok=0) == ("unreachable", why)
    # Still first: blocks, the budget, and a share failed mostly by site change.
    gone = CellVerdict(False, failure="site_changed", reason="HTTP 404 on the listing page")
    assert platform_health([good, down], outage=why, exhausted="request budget of 10 spent")[0] == "budget_exhausted"
    # Down after only true zeros (an empty category first in the grid): no evidence of a whole platform at zero,
    # so unreachable (the flow retries it), not site_changed; in count mode too. Controls: the zeros without an
    # outage are site_changed; one cell with a count is partial.
    assert platform_health([zero] + [down] * 47, outage=why, pages_ok=3) == ("unreachable", why)
    assert platform_health([zero] * 2 + [down] * 46, outage=why, pages_ok=3, mode="count") == ("unreachable", why)
    assert platform_health([zero] * 20 + [down] * 28, outage=why) == ("unreachable", why)
    assert platform_health([zero] * 20 + [down] * 28)[0] == "site_changed"
    assert platform_health([zero] + [good] + [down] * 46, outage=why, pages_ok=3)[0] == "partial"
    assert platform_health([good] * 20 + [gone] * 20 + [down] * 8, outage=why)[0] == "site_changed"

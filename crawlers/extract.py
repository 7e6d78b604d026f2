"""Reading values out of pages with an ``Extract`` (CSS / XPath / JMESPath, then regex, many, split).

Pure functions over parsel selectors, so the DSL is unit-testable without Scrapy or a network.
JSON documents are read through parsel's JMESPath support (``Selector(text=..., type="json")``); JSON embedded in
an HTML page (``css``/``xpath`` selecting a ``<script>`` blob's text, then ``jmespath``) through the same support
on the selected text. An HTML element selected without ``::text`` yields its whole text (``string()``: text split
across child nodes joined), and every value has its whitespace runs collapsed to one space.
"""

from __future__ import annotations

import re
from functools import cache

from parsel import Selector, SelectorList

from pointcount.config import Extract


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def document(text: str, fmt: str) -> Selector:
    """A selector over a whole page; ``fmt`` is the platform's ``format`` (html or json)."""
    return Selector(text=text, type="json" if fmt == "json" else "html")


def nodes(sel: Selector, ex: Extract) -> SelectorList[Selector]:
    """The nodes (HTML elements or JSON objects) an Extract selects, without regex/split (card selection)."""
    found = sel.css(ex.css) if ex.css else sel.xpath(ex.xpath) if ex.xpath else None
    if found is None:
        assert ex.jmespath is not None  # the model guarantees a source
        return sel.jmespath(ex.jmespath)
    # css/xpath then jmespath: the selected text is JSON (a __NEXT_DATA__ blob); a blob that is not JSON gives none.
    return found.jmespath(ex.jmespath) if ex.jmespath else found


def _as_text(node: Selector) -> str | None:
    """A node's value as text with whitespace normalised; None when absent (JSON null) or empty."""
    if node.type == "json":
        value = node.get()
        # JMESPath yields JSON scalars; null means "absent", never the string "None".
        if value is None:
            return None
        text = str(value).lower() if isinstance(value, bool) else str(value)
    elif isinstance(node.root, str):  # a text node or attribute value
        text = node.root
    else:  # an element: all its text, however the markup splits it ("Leeds <b>City</b>" -> "Leeds City")
        text = node.xpath("string()").get() or ""
    return " ".join(text.split()) or None


def values(sel: Selector, ex: Extract) -> list[str]:
    """Every value an Extract yields: first match only unless ``many``; regex group; ``split``; stripped."""
    raw = [t for t in (_as_text(n) for n in nodes(sel, ex)) if t is not None]
    out: list[str] = []
    for text in raw:
        if ex.regex:
            m = _compiled(ex.regex).search(text)
            if not m:
                continue
            text = m.group(1) if m.re.groups else m.group(0)
            if text is None:
                continue
        parts = text.split(ex.split) if ex.split else [text]
        out.extend(p.strip() for p in parts if p.strip())
        if not ex.many:
            break
    return out


def first(sel: Selector, ex: Extract) -> str | None:
    found = values(sel, ex)
    return found[0] if found else None


def matches(sel: Selector, ex: Extract) -> bool:
    """Whether a marker Extract (e.g. ``cards.empty``) is on the page: a node is enough, even an element without
    text (an icon-only 'no results' box); with ``regex``, a value must match."""
    return first(sel, ex) is not None if ex.regex else len(nodes(sel, ex)) > 0


MAX_TOTAL_DIGITS = 7  # no platform states 10 million adverts in one cell; a longer run is a phone number or junk
_TOTAL_DIGITS = re.compile(rf"[0-9]{{1,{MAX_TOTAL_DIGITS}}}")


def parse_total(text: str | None) -> int | None:
    """A stated total such as ``1,234`` or ``1 234`` as an int; None (the selector did not match: a site change)
    unless what is left after removing thousands separators is 1 to 7 ASCII digits (not ``²``, not a phone
    number)."""
    if text is None:
        return None
    digits = re.sub(r"[\s,.\u00a0\u202f_']", "", text)
    return int(digits) if _TOTAL_DIGITS.fullmatch(digits) else None

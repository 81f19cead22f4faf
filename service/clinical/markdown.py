"""Text from a record (a Condition's name, a draft order's, an id) placed in a card's markdown detail: someone
else's text, shown as it is written, never as formatting. Pure."""
from __future__ import annotations

import re

# The characters that make markdown of plain text (CommonMark and GitHub's: emphasis, code, links and images, raw
# HTML, headings, block quotes, tables, strike-through), each escaped with a backslash (any ASCII punctuation may be),
# and the line breaks and other control characters that would start a block of the text's own, each a space.
_ESCAPED = {ord(c): "\\" + c for c in "\\`*_[]<>#|~!"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_EITHER = re.compile(r"[\\`*_\[\]<>#|~!\x00-\x1f\x7f\u0085\u2028\u2029]")   # most texts hold neither: as they are
# What GitHub's markdown (remark-gfm, as the CDS Hooks sandbox renders a detail) makes a link of without any
# markup: an address after "://" or "www.", or an email address. The punctuation that starts each, escaped, leaves
# plain text ("https\\://evil.example" shows as "https://evil.example", not as a link). Whether a text holds one is
# three substring tests in `literal`: the case-blind regular expression they stand for (r"://|www\.|@",
# IGNORECASE) has no prefix to scan for, so its `search` was tried at every character (~1.3 µs for a 100-character
# evidence line, ~0.2 µs the tests).
_AUTOLINK = re.compile(r"(?<=[A-Za-z])(?=://)|(?<=www)(?=\.)|@", re.IGNORECASE)
# A FHIR id (R4 2.24.0.1: [A-Za-z0-9\-\.]{1,64}); what an entry's id must be to be named by it.
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# A JSON name FHIR could define, or an index: what a path through an entry must be made of to be shown.
ELEMENT = re.compile(r"_?[A-Za-z][A-Za-z0-9]{0,63}|[0-9]{1,9}")
NOT_AN_ID = "(an id that is not a FHIR id)"
NOT_AN_ELEMENT = "(an element that is not FHIR)"


def literal(text: str) -> str:
    """`text` as markdown shows it literally, on one line, and no address in it a link."""
    if _EITHER.search(text):
        text = _CONTROL.sub(" ", text).translate(_ESCAPED)
    # r"://|www\.|@" with IGNORECASE, as substring tests: only "w" and "W" are a "w" to IGNORECASE, and str.lower
    # makes a "w" or a "." of no other character (tests/test_markdown.py checks both over every character).
    if "://" in text or "@" in text or "www." in text.lower():
        return _AUTOLINK.sub(r"\\\g<0>", text)
    return text


def shown_id(value: object) -> str:
    """An entry's id as a card names it: the id when it is a FHIR id, else NOT_AN_ID (a resource left out as invalid
    FHIR may hold any JSON there: text of the sender's making, of any length)."""
    return value if isinstance(value, str) and FHIR_ID.fullmatch(value) else NOT_AN_ID


def element_path(parts) -> str:
    """A dotted path through an entry, each part shown when FHIR could name it so (an index, or an element's JSON
    name), else NOT_AN_ELEMENT: an element FHIR does not define is named by the sender."""
    return ".".join(str(part) if ELEMENT.fullmatch(str(part)) else NOT_AN_ELEMENT for part in parts)

"""markdown.literal's test for a text an address could be made a link of: three substring tests standing for the
case-blind regular expression r"://|www\\.|@" it searched with before (issue 18: the expression has no prefix to
scan for, so its search was tried at every character of every evidence line)."""
from __future__ import annotations

import re
import sys

from hypothesis import given, settings, strategies as st

from service.clinical.markdown import _AUTOLINK, _CONTROL, _EITHER, _ESCAPED, literal

_AUTOLINKED = re.compile(r"://|www\.|@", re.IGNORECASE)     # what `literal` searched with before


def old_literal(text: str) -> str:
    """markdown.literal before the substring tests."""
    if _EITHER.search(text):
        text = _CONTROL.sub(" ", text).translate(_ESCAPED)
    return _AUTOLINK.sub(r"\\\g<0>", text) if _AUTOLINKED.search(text) else text


def _characters() -> list[str]:
    return [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]


def test_only_w_is_a_w_to_ignorecase_and_lower_makes_no_other():
    """What the substring tests rest on: of every character, only those written in the expression match one of its
    characters case-blind, and str.lower makes none of them of any other character."""
    for c in _characters():
        for written in "w.@:/":
            assert (re.fullmatch(re.escape(written), c, re.IGNORECASE) is not None) == (c.lower() == written)
            assert (written in c.lower()) == (c.lower() == written)


def test_every_character_around_an_address_is_shown_as_before():
    for c in _characters():
        for text in (f"{c}ww.x", f"w{c}w.x", f"ww{c}.x", f"www{c}x", f"a{c}//b", f"a:{c}/b", f"a{c}b", c):
            assert literal(text) == old_literal(text), ascii(text)


ADDRESSY = st.lists(st.sampled_from(list("wW.@:/ aİıſKkẞß\u212a\u0130\n*_[") + ["www.", "://", "WwW."]),
                    max_size=20).map("".join)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(ADDRESSY, st.text(max_size=60)))
def test_literal_shows_a_text_as_the_regular_expression_did(text):
    assert literal(text) == old_literal(text)

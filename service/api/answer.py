"""A hook's answer: the response body, and the uuid and topic of each card (for metrics, the log and the
record of issued cards).

A chart seen again gets the cards decided the last time, each showing with uuids of its own (feedback comes
back by them). Remembered cards are kept as their JSON cut at each uuid, so answering again is joining the
pieces around new uuids: nothing decoded, copied or encoded per call.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import chain

from service.clinical.frozen import set_at_once
from service.fastjson import encode, encode_orjson
from service.uuids import new_uuids


def _topic(card: dict) -> str:
    return card["source"]["topic"]["code"]


def _suggested(cards: list[dict], topics: tuple[str, ...] | list[str]) -> tuple[tuple[str, str, str, str], ...]:
    """(suggestion uuid, card uuid, topic, label) of each suggestion; `topics`: each card's (a card's topic read once,
    not once more for each of its suggestions)."""
    return tuple((s["uuid"], c["uuid"], topic, s["label"])
                 for c, topic in zip(cards, topics) for s in c.get("suggestions", ()))


@set_at_once                # one a call: its three fields set at once, not by object.__setattr__ each
@dataclass(frozen=True)
class Answer:
    json: bytes                             # the response body, {"cards": [...]}
    issued: tuple[tuple[str, str], ...]     # (uuid, topic) of each card, in order
    # (suggestion uuid, card uuid, topic, label) of each suggestion: feedback names an accepted one by uuid
    suggested: tuple[tuple[str, str, str, str], ...] = ()

    @classmethod
    def of(cls, cards: list[dict]) -> "Answer":
        topics = tuple(map(_topic, cards))
        return cls(encode({"cards": cards}), tuple(zip((c["uuid"] for c in cards), topics)), _suggested(cards, topics))

    @property
    def topics(self) -> list[str]:
        return [topic for _, topic in self.issued]

    @property
    def cards(self) -> list[dict]:
        """The cards, decoded again (for callers other than the route; the stdlib keeps any number exact)."""
        return json.loads(self.json)["cards"]


@dataclass(frozen=True)
class AnswerTemplate:
    """Cards to show again: their JSON cut at every uuid (of the cards and of their suggestions)."""
    pieces: tuple[bytes, ...]
    card_slots: tuple[int, ...]             # for each card, which cut holds its own uuid
    topics: tuple[str, ...]
    suggestion_slots: tuple[tuple[int, int, str, str], ...] = ()    # (its cut, its card's cut, topic, label)

    @classmethod
    def of(cls, cards: list[dict]) -> "AnswerTemplate | None":
        """None when orjson cannot write the cards (they are then answered once, not remembered)."""
        uuids = [c["uuid"] for c in cards] + [s["uuid"] for c in cards for s in c.get("suggestions", ())]
        try:
            body = encode_orjson({"cards": cards})
        except TypeError:
            return None
        if not uuids:
            return cls((body,), (), ())
        # Each uuid is random, written once; the JSON of a uuid string is the string itself.
        parts = re.split(b"(" + b"|".join(re.escape(u.encode()) for u in uuids) + b")", body)
        found = [p.decode() for p in parts[1::2]]
        topics = tuple(map(_topic, cards))
        return cls(tuple(parts[0::2]), tuple(found.index(c["uuid"]) for c in cards), topics,
                   tuple((found.index(s), found.index(c), topic, label)
                         for s, c, topic, label in _suggested(cards, topics)))

    def fill(self) -> Answer:
        fresh = new_uuids(len(self.pieces) - 1)
        body = b"".join(chain(chain.from_iterable(zip(self.pieces, (u.encode() for u in fresh))), self.pieces[-1:]))
        return Answer(body, tuple(zip((fresh[i] for i in self.card_slots), self.topics)),
                      tuple((fresh[s], fresh[c], topic, label) for s, c, topic, label in self.suggestion_slots))

"""service/answer.py: remembered cards answered again with uuids of their own, byte for byte the same JSON
otherwise, and the (uuid, topic) of each card for the record of issued cards."""
import datetime
import json
import os
import signal
import time
import uuid
from unittest import mock

import pytest
from hypothesis import given, strategies as st

from service import uuids
from service.api.answer import Answer, AnswerTemplate, new_uuids


def _card(topic, suggestions=0, text="t"):
    card = {"uuid": str(uuid.uuid4()), "summary": f"{topic}: {text}", "indicator": "warning",
            "source": {"label": "avh-cds", "topic": {"code": topic}}}
    if suggestions:
        card["suggestions"] = [{"label": f"s{i}", "uuid": str(uuid.uuid4()), "actions": []} for i in range(suggestions)]
    return card


def _without_uuids(cards):
    return [{**c, "uuid": None, "suggestions": [{**s, "uuid": None} for s in c.get("suggestions", [])]} for c in cards]


def test_new_uuids_are_version_7_uuids_of_this_millisecond_with_random_bits():
    before = time.time_ns() // 1_000_000
    made = new_uuids(2000)
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == 2000
    for text in made[:200]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
        assert before <= parsed.int >> 80 <= after          # unix_ts_ms, the first 48 bits
    randoms = {uuid.UUID(u).int & ((1 << 80) - 1) for u in made}
    assert len(randoms) == 2000                                 # same millisecond or not, the rest differs
    assert new_uuids(0) == []


def _in_a_forked_child(count: int) -> list[str]:
    """new_uuids(count) in a forked child of this process, failing the test if the child does not finish in 10 s."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child: its uuids, to the parent
        os.write(write, " ".join(new_uuids(count)).encode())
        os._exit(0)
    os.close(write)
    # A fork of this multi-threaded test process can hang on a lock another thread held: never wait forever.
    deadline = time.monotonic() + 10
    while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    if time.monotonic() >= deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish within 10 s")
    return os.read(read, 4096).decode().split()


def test_a_forked_worker_never_hands_out_the_random_bits_its_parent_will():
    """Random bytes are read 4 KB at a time; a gunicorn worker forked with some of them must not reuse them."""
    new_uuids(1)                                    # the parent now holds unused random bytes
    child = _in_a_forked_child(5)
    parent = new_uuids(5)
    random_part = lambda u: u[14:]                  # noqa: E731 (after the 48-bit millisecond)
    assert len(child) == 5 and not {random_part(u) for u in child} & {random_part(u) for u in parent}


def test_a_child_forked_while_a_thread_reads_random_bytes_makes_uuids():
    """A thread of the parent holds the lock while it reads os.urandom (the GIL let go: the very moment another
    thread may fork); the child, which forgot the parent's bytes and must read its own, does not wait for it."""
    with uuids._random_lock:                        # as that thread would, at the fork
        child = _in_a_forked_child(5)
    assert len(child) == 5


@given(st.binary(min_size=0, max_size=400), st.integers(0, 2**63), st.integers(0, 40))
def test_the_uuids_written_at_once_are_each_written_as_the_plain_layout_has_it(random, nanoseconds, taken_before):
    """new_uuids writes the random parts of a pool at once (hex in groups, dashes dropped and one made a line end)
    and puts the millisecond before each part taken; each uuid is still the millisecond, then its 10 bytes with
    version and variant set, laid out 8-4-4-4-12."""
    count = len(random) // 10
    taken_before = min(taken_before, count)
    given_bytes = random[:10 * count]
    uuids._forget_random()                          # the next read of os.urandom writes the pool
    with mock.patch.object(uuids.os, "urandom", lambda n: given_bytes + bytes(n - len(given_bytes))), \
            mock.patch.object(time, "time_ns", lambda: nanoseconds):
        made = new_uuids(taken_before) + new_uuids(count - taken_before)
    stamp = (nanoseconds // 1_000_000 & 0xFFFF_FFFF_FFFF).to_bytes(6, "big").hex()
    expected = []
    for i in range(count):
        part = bytearray(given_bytes[10 * i:10 * i + 10])
        part[0], part[2] = part[0] & 0x0F | 0x70, part[2] & 0x3F | 0x80
        h = stamp + part.hex()
        expected.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    assert made == expected


def test_a_call_takes_more_uuids_than_a_pool_holds(monkeypatch):
    """The pool is written again when it holds fewer parts than a call takes, as many as the call needs."""
    monkeypatch.setattr(uuids, "_POOL", 3)
    made = new_uuids(2) + new_uuids(2) + new_uuids(7) + new_uuids(1)
    assert len(set(made)) == 12 and all(uuid.UUID(u).version == 7 and str(uuid.UUID(u)) == u for u in made)


def test_threads_never_get_the_same_random_bytes():
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(8) as pool:
        made = [u for uuids in pool.map(lambda _: new_uuids(7), range(3000)) for u in uuids]
    assert len({u[14:] for u in made}) == len(made) == 21000


def test_without_a_gil_every_read_of_random_bytes_takes_the_lock(monkeypatch):
    """On a free-threaded build two threads could interleave their reads of the buffer: there each read is locked."""
    taken = []

    class CountingLock:
        def __init__(self):
            self.lock = uuids.threading.Lock()

        def __enter__(self):
            taken.append(1)
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    monkeypatch.setattr(uuids, "_random_lock", CountingLock())
    new_uuids(2)                                    # the buffer filled, whichever way
    taken.clear()
    monkeypatch.setattr(uuids, "_GIL", True)
    new_uuids(2)
    assert taken == []
    monkeypatch.setattr(uuids, "_GIL", False)
    made = [new_uuids(3) for _ in range(5)]
    assert len(taken) == 5 and len({u for three in made for u in three}) == 15


def test_uuids_made_later_sort_after_earlier_ones():
    """What keeps the issued-card index appending: a later call's uuids sort after an earlier call's."""
    first = new_uuids(3)
    time.sleep(0.002)
    assert max(first) < min(new_uuids(3))


def test_a_template_answers_the_same_cards_with_new_uuids_each_time():
    cards = [_card("urgent-decompression", suggestions=2), _card("spine-mri"), _card("dexamethasone", suggestions=1)]
    template = AnswerTemplate.of(cards)
    first, second = template.fill(), template.fill()
    for answer in (first, second):
        shown = json.loads(answer.json)["cards"]
        assert _without_uuids(shown) == _without_uuids(cards)
        assert [topic for _, topic in answer.issued] == ["urgent-decompression", "spine-mri", "dexamethasone"]
        assert [card_uuid for card_uuid, _ in answer.issued] == [c["uuid"] for c in shown]
    everything = lambda a: {c["uuid"] for c in a.cards} | {s["uuid"] for c in a.cards for s in c.get("suggestions", [])}  # noqa: E731
    original = everything(Answer.of(cards))
    assert len(everything(first)) == len(original) == 6
    assert everything(first).isdisjoint(everything(second)) and everything(first).isdisjoint(original)


def test_a_template_writes_what_the_app_would_write():
    cards = [_card("spine-mri", suggestions=1, text="Ünïcode \"quoted\" 3.5 mg \u2265 13 days")]
    filled = AnswerTemplate.of(cards).fill()
    ((card_uuid, _),) = filled.issued
    suggestion_uuid = filled.cards[0]["suggestions"][0]["uuid"]
    again = [{**cards[0], "uuid": card_uuid, "suggestions": [{**cards[0]["suggestions"][0], "uuid": suggestion_uuid}]}]
    assert filled.json == Answer.of(again).json


@given(st.lists(st.tuples(st.sampled_from(["spine-mri", "radiotherapy", "dexamethasone"]), st.integers(0, 3),
                          st.text(max_size=40)), max_size=6))
def test_any_cards_survive_the_template(specs):
    cards = [_card(topic, n, text) for topic, n, text in specs]
    answer = AnswerTemplate.of(cards).fill()
    assert _without_uuids(answer.cards) == _without_uuids(cards)
    assert [t for _, t in answer.issued] == [topic for topic, _, _ in specs]


def test_no_cards_and_cards_orjson_cannot_write():
    assert json.loads(AnswerTemplate.of([]).fill().json) == {"cards": []}
    huge = {**_card("spine-mri"), "n": 2 ** 70}
    assert AnswerTemplate.of([huge]) is None
    assert Answer.of([huge]).cards[0]["n"] == 2 ** 70


@given(st.lists(st.tuples(st.sampled_from(["spine-mri", "radiotherapy", "dexamethasone"]), st.integers(0, 3),
                          st.text(max_size=40)), max_size=6))
def test_an_answer_of_fresh_cards_is_the_json_the_app_writes_with_each_card_and_suggestion_named(specs):
    """Answer.of encodes with orjson itself and reads the uuids and topics in one loop (branch small18): the body is
    fastjson.encode's, byte for byte, and every card (uuid, topic) and suggestion (uuid, card uuid, topic, label)."""
    from service.fastjson import encode
    cards = [_card(topic, n, text) for topic, n, text in specs]
    answer = Answer.of(cards)
    assert answer.json == encode({"cards": cards})
    assert answer.issued == tuple((c["uuid"], c["source"]["topic"]["code"]) for c in cards)
    assert answer.suggested == tuple((s["uuid"], c["uuid"], c["source"]["topic"]["code"], s["label"])
                                     for c in cards for s in c.get("suggestions", ()))
    with_date = [{**c, "issued": datetime.date(2026, 11, 30)} for c in cards]    # an HTTP date, Flask's `default`
    assert Answer.of(with_date).json == encode({"cards": with_date})

"""A request body decoded as orjson decodes it, except the entries of prefetch Bundles: of those, only what prefetch
reads to choose the resources it keeps becomes Python objects, and the resources it keeps.

The EHR sends whole charts (7 MB, 10,000 resources) of which about ten are relevant; orjson.loads built Python
objects for every resource, more than half of a first-seen call's CPU. Here:
- simdjson parses the body: the check that it is JSON (UTF-8, escapes, numbers, nesting) and the DOM that
  everything outside the entries (plain dicts and lists, as orjson gives them) and the resources kept are
  decoded from (`as_dict`);
- msgspec decodes, in one pass in C, each entry's `resource` and `search` and, of each resource, only the keys
  prefetch and its selector read (`keys`): the rest of an entry is skipped without a Python object.
Where either could read the JSON differently from orjson, orjson decodes the body, whole:
- a body simdjson refuses (orjson refuses it too, or reads it: integers beyond 64 bits, objects nested 1,024
  deep), or one starting with a byte order mark (simdjson skips it, orjson refuses it);
- a key given twice in the body, `prefetch` or a prefetch value (simdjson's `[key]` gives the first value,
  orjson the last; `as_dict` and msgspec keep the last, as orjson does);
- entries msgspec does not decode (nested deeper than Python's recursion limit).
orjson also decodes bodies under SMALLEST, and the entries when the selector keeps most of a sample of them:
there the two passes would cost more than they save. One simdjson parser per body: a parser's proxies point
into its buffers, which a second parse would reuse.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, TypedDict, Union

import msgspec
import orjson
import simdjson

BYTE_ORDER_MARK = b"\xef\xbb\xbf"
# A smaller body is decoded by orjson: as fast, below this (the fixed cost of the two passes, ~0.1 ms, is what
# orjson spends on ~100 resources).
SMALLEST = 128 * 1024
Object, Array = simdjson.Object, simdjson.Array


class Undecided(Exception):
    """The lazy reading cannot promise orjson's result: orjson decodes the body."""


def decode(body: bytes) -> Any:
    """orjson.loads(body), but each prefetch Bundle's `entry` array is `Entries`. Raises what orjson raises."""
    if len(body) < SMALLEST or body.startswith(BYTE_ORDER_MARK):
        return orjson.loads(body)
    try:
        document = simdjson.Parser().parse(body)
        if type(document) is not Object:
            raise Undecided
        source = _Source(body)
        return {key: _prefetch(value, source) if key == "prefetch" else plain(value)
                for key, value in _fields(document)}
    except Exception:   # simdjson's refusal (ValueError, RuntimeError) or Undecided
        return orjson.loads(body)


def plain(value: Any) -> Any:
    """A simdjson value as orjson decodes it (as_dict keeps the last of a key given twice, as orjson does)."""
    kind = type(value)
    if kind is Object:
        return value.as_dict()
    if kind is Array:
        return value.as_list()
    return value


def _fields(value: Object) -> Iterable[tuple[str, Any]]:
    """(key, value) of an object read key by key; Undecided when a key is given twice."""
    keys = list(value.keys())
    if len(set(keys)) != len(keys):
        raise Undecided
    return ((key, value[key]) for key in keys)


def _prefetch(value: Any, source: _Source) -> Any:
    if type(value) is not Object:
        return plain(value)
    return {key: _bundle(item, key, source) for key, item in _fields(value)}


def _bundle(value: Any, key: str, source: _Source) -> Any:
    """A prefetch value: of a Bundle, the `entry` array stays undecoded; anything else is decoded."""
    if type(value) is not Object or "resourceType" not in value or value["resourceType"] != "Bundle" \
            or "entry" not in value or type(value["entry"]) is not Array:
        return plain(value)
    bundle = {name: Entries(item, key, source) if name == "entry" else plain(item) for name, item in _fields(value)}
    source.arrays.append(value["entry"])
    return bundle


class _Source:
    """The body; its prefetch entries as `_reader(keys)` decodes them (once for each `keys` asked); the body as
    orjson decodes it, when asked."""
    __slots__ = ("body", "arrays", "read_by", "decoded", "judged")

    def __init__(self, body: bytes):
        self.body, self.arrays, self.read_by, self.decoded, self.judged = body, [], {}, None, {}

    def entries(self, keys: frozenset[str]) -> dict | None:
        """Prefetch key -> its entries decoded by `keys`; None when msgspec does not decode them (what it refuses:
        values nested deeper than Python's recursion limit)."""
        if keys not in self.read_by:
            try:
                prefetch = _reader(keys).decode(self.body)["prefetch"]
                self.read_by[keys] = {key: value["entry"] for key, value in prefetch.items()
                                      if type(value) is dict and type(value.get("entry")) is list}
            except Exception:
                self.read_by[keys] = None
        return self.read_by[keys]

    def whole(self) -> dict:
        if self.decoded is None:
            self.decoded = orjson.loads(self.body)
        return self.decoded

    def mostly_kept(self, wanted: Callable[[dict], bool]) -> bool:
        """Whether `wanted` keeps most of a sample of the entries (SAMPLE of each Bundle, spread over it): then
        reading them by their keys first would only add to decoding them whole (a chart of relevant resources
        only, 20,000 of them: 0.2 s more)."""
        if wanted not in self.judged:
            sample = [plain(array[i]) for array in self.arrays
                      for i in range(0, len(array), max(1, -(-len(array) // SAMPLE)))] if SAMPLE else []
            resources = [e.get("resource") for e in sample if type(e) is dict]
            resources = [r for r in resources if type(r) is dict]
            self.judged[wanted] = sum(map(wanted, resources)) * 2 > len(resources) > 0
        return self.judged[wanted]


# A JSON value that is not an object, decoded whole (only as an entry, a resource or a prefetch value that
# cannot be read: never large but in an attack).
_NOT_OBJECT = Union[list[Any], str, int, float, bool, None]


@functools.cache
def _reader(keys: frozenset[str]) -> msgspec.json.Decoder:
    """Decodes of a body its prefetch values' entries: of each, `resource` (only `keys`) and `search`."""
    resource = TypedDict("Resource", {key: Any for key in sorted(keys)}, total=False)
    entries = list[Union[TypedDict("Entry", {"resource": Union[resource, _NOT_OBJECT], "search": Any}, total=False),
                         _NOT_OBJECT]]
    bundle = TypedDict("Bundle", {"entry": Union[entries, dict[str, Any], str, int, float, bool, None]}, total=False)
    return msgspec.json.Decoder(TypedDict("Body", {"prefetch": dict[str, Union[bundle, _NOT_OBJECT]]}, total=False))


# Up to this many resources kept of one Bundle are found by their index (Entries._whole).
FEW = 64
# Entries of each Bundle decoded whole to judge whether most are kept (_Source.mostly_kept).
SAMPLE = 8


class Entries:
    """A prefetch Bundle's `entry` array, undecoded until `read`."""
    __slots__ = ("array", "key", "source")

    def __init__(self, array: Array, key: str, source: _Source):
        self.array, self.key, self.source = array, key, source

    def __len__(self) -> int:
        return len(self.array)

    def __repr__(self) -> str:
        return f"<{len(self.array)} entries>"

    def read(self, keys: frozenset[str] | None, wanted: Callable[[dict], bool] | None
             ) -> tuple[list, Callable[[list[int]], list[dict]] | None]:
        """The entries as orjson decodes them, but of each entry object only `resource` and `search`, and of its
        resource only `keys`: all of them when keys is None, when `wanted` keeps most of a sample of them or when
        msgspec did not decode them. With them, what gives the resources of the entries at some positions whole
        (None: they are whole)."""
        use = keys is not None and wanted is not None and not self.source.mostly_kept(wanted)
        decoded = self.source.entries(keys) if use else None
        if decoded is None:
            return self.source.whole()["prefetch"][self.key]["entry"], None
        return decoded[self.key], self._whole

    def _whole(self, positions: list[int]) -> list[dict]:
        """The resources of the entries at `positions` (ascending), as orjson decodes them: a few from the DOM
        (an array is walked from its start to an index), more in one walk of the array, most of them by orjson
        (simdjson's as_dict costs more than orjson once the objects made stay: it does not share the keys' strings).
        """
        if len(positions) * 2 > len(self.array):
            entries = self.source.whole()["prefetch"][self.key]["entry"]
            return [entries[i]["resource"] for i in positions]
        if len(positions) <= FEW:
            return [self.array[i].as_dict()["resource"] for i in positions]
        chosen = set(positions)
        return [entry.as_dict()["resource"] for i, entry in enumerate(self.array) if i in chosen]

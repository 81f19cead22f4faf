"""Input limits beyond the body size (Flask's MAX_CONTENT_LENGTH answers 413 for that one)."""
from __future__ import annotations

from itertools import chain, compress

from ..errors import ApiError

_IS_CONTAINER = frozenset({dict, list}).__contains__
# The raw-bytes depth check keeps only brackets and quotes, brackets turned into "(" and ")".
_STRUCTURE = bytes.maketrans(b"{[}]", b"(())")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'{}[]"')


def json_depth(value) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, [] or {} is 1), without recursion.

    Level by level, with the per-value work in C (chain, map, compress): about a third of orjson.loads of
    the same body. Requests use raw_json_depth on their bytes; this gives the depth of a body too deep for it.
    """
    deepest = 0
    level = [value] if type(value) in (dict, list) else []
    while level:
        deepest += 1
        # A generator, not a list: each dict view is freed at once, so the walk does not wake the GC.
        values = list(chain.from_iterable(node.values() if type(node) is dict else node for node in level))
        level = list(compress(values, map(_IS_CONTAINER, map(type, values))))
    return deepest


def raw_json_depth(raw: bytes, limit: int) -> int | None:
    """Nesting depth of a body orjson has already accepted, read from its bytes, or None when it is deeper
    than `limit`. The same number as json_depth, at about a third of its cost on a typical prefetch: every
    step is one C-level pass over the bytes (translate, replace, split), no Python object per JSON value.

    Escapes go first (outside strings valid JSON has no backslash; inside, pairs read left to right), then
    everything but brackets and quotes. Removing two adjacent quotes never changes what lies outside strings
    (an empty string goes, or two strings with nothing between them become one), so most strings vanish in
    one replace; the few holding brackets ("mm[Hg]") are cut out by splitting on the quotes that remain.
    What is left is the bracket skeleton, and each replace of "()" peels exactly one level.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = raw.translate(_STRUCTURE, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    depth = 0
    while skeleton:
        depth += 1
        if depth > limit:
            return None
        skeleton = skeleton.replace(b"()", b"")
    return depth


def prefetch_resource_count(body: dict) -> int:
    """Resources the client sent as prefetch: one per resource, one per Bundle entry."""
    prefetch = body.get("prefetch")
    if not isinstance(prefetch, dict):
        return 0
    count = 0
    for value in prefetch.values():
        if isinstance(value, dict):
            entries = value.get("entry") if value.get("resourceType") == "Bundle" else None
            count += len(entries) if isinstance(entries, list) else 1
    return count


def check_limits(body, max_depth: int, max_resources: int, raw: bytes | None = None) -> None:
    """`raw`: the bytes `body` was decoded from, when there are some (the cheap depth check reads them)."""
    depth = raw_json_depth(raw, max_depth) if raw is not None else None
    if depth is None:
        depth = json_depth(body)      # no bytes, or too deep: the walk gives the exact depth for the message
    if depth > max_depth:
        raise ApiError(400, "json_too_deep", f"the JSON body nests {depth} levels deep; at most {max_depth} "
                       "are accepted (AVH_CDS_MAX_JSON_DEPTH)")
    if isinstance(body, dict):
        count = prefetch_resource_count(body)
        if count > max_resources:
            raise ApiError(413, "too_many_resources", f"prefetch carries {count} resources; at most "
                           f"{max_resources} are accepted (AVH_CDS_MAX_PREFETCH_RESOURCES)")

"""How deep decoded JSON nests, measured without recursion (deep input cannot crash the measure)."""
from __future__ import annotations

from itertools import chain, compress

_IS_CONTAINER = frozenset({dict, list}).__contains__
SCALAR = {"type": ["string", "number", "boolean", "null"]}


def json_depth(value) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, [] or {} is 1), without recursion.

    Level by level, with the per-value work in C (chain, map, compress): about a third of orjson.loads of
    the same body.
    """
    deepest = 0
    level = [value] if type(value) in (dict, list) else []
    while level:
        deepest += 1
        # A generator, not a list: each dict view is freed at once, so the walk does not wake the GC.
        values = list(chain.from_iterable(node.values() if type(node) is dict else node for node in level))
        level = list(compress(values, map(_IS_CONTAINER, map(type, values))))
    return deepest


def depth_schemas(levels: int, at: str = "$defs") -> dict[str, dict]:
    """JSON schemas `depth-k` (k = 0 to `levels`), for a schema's `at` (`$defs`, or a draft 6 schema's `definitions`):
    a value nesting at most k levels deep, as json_depth counts them. Each level refers to the one below it (written
    out whole, the schema would double a level); a validator in Rust checks them without a Python object made per
    value."""
    below = [{"$ref": f"#/{at}/depth-{k}"} for k in range(levels)]
    return {"depth-0": SCALAR, **{f"depth-{k + 1}": {"additionalProperties": ref, "items": ref}
                                  for k, ref in enumerate(below)}}


_SCALAR_TYPES = frozenset({"string", "integer", "number", "boolean", "null"})


def _scalar(schema: dict) -> bool:
    """A schema that refuses every object and array (a scalar type, or an enum or const of scalars): it bounds the
    depth of what it accepts at 0."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind in _SCALAR_TYPES
    if isinstance(kind, list) and kind:
        return _SCALAR_TYPES.issuperset(kind)
    values = schema["enum"] if "enum" in schema else [schema["const"]] if "const" in schema else None
    return isinstance(values, list) and not any(isinstance(v, (dict, list)) for v in values)


def leveled(definitions: dict[str, dict], name: str, max_depth: int, levels: int,
            unleveled: frozenset[str] = frozenset(), at: str = "definitions") -> dict:
    """A draft 6 schema that accepts what `{"allOf": [depth-<max_depth>, {"$ref": <name>}]}` accepts, with the
    depth written into the definitions instead of walked again: its value's first `levels` levels are copies of
    the definitions they are read with, each knowing its level (`Coding@3`), so a closed object (no element but
    those it names: `additionalProperties: false`) or an array of one schema bounds its values by bounding each
    element's or item's, a scalar bounds itself, and only what is open (`{}`, an element accepted whatever it
    holds) or below `levels`, or a definition named in `unleveled`, is walked by the depth schema, from its level.
    The result holds its definitions: those the schema reaches alone.

    Equivalent by induction on the value, for a value at level e <= levels <= max_depth: it nests at most
    max_depth - e + 1 levels iff each element or item nests at most max_depth - e (a container's own level is
    within the limit); the keywords that read the value at its own level (required, dependencies, allOf, ...)
    are kept as written."""
    limit = max(max_depth, 0)
    levels = max(min(levels, limit), 0)
    made: dict[str, dict] = {}

    def bound(level: int) -> dict:                  # a value at `level` nests at most limit - level + 1 levels
        return {"$ref": f"#/{at}/depth-{limit - level + 1}"}

    def at_level(schema: dict, level: int) -> dict:
        if "$ref" in schema:                        # draft 6: a $ref's siblings are ignored
            target = schema["$ref"].rsplit("/", 1)[1]
            definition = definitions[target]
            if _scalar(definition):
                return schema
            if level > levels or target in unleveled:
                return {"allOf": [bound(level), schema]}
            key = f"{target}@{level}"
            if key not in made:
                made[key] = {}                      # taken: a definition naming itself refers to its copy
                made[key] = at_level(definition, level)
            return {"$ref": f"#/{at}/{key}"}
        if _scalar(schema):
            return schema
        if level <= levels:
            kind = schema.get("type")
            if kind == "object" and schema.get("additionalProperties") is False and "patternProperties" not in schema:
                return {**schema, "properties": {key: at_level(value, level + 1)
                                                 for key, value in schema.get("properties", {}).items()}}
            if kind == "array" and isinstance(schema.get("items"), dict) and "additionalItems" not in schema \
                    and "contains" not in schema:
                return {**schema, "items": at_level(schema["items"], level + 1)}
        return {"allOf": [bound(level), schema]} if schema else bound(level)

    root = at_level({"$ref": f"#/{at}/{name}"}, 1)
    return {**root, at: _reached(root, {**definitions, **made, **depth_schemas(limit, at)}, at)}


def _reached(schema: dict, definitions: dict[str, dict], at: str) -> dict[str, dict]:
    """The definitions a schema refers to, directly or through others (a validator compiles every definition it
    is given: ~40 % of its memory for the record's per-type schemas)."""
    found: dict[str, dict] = {}
    todo: list = [schema]
    prefix = f"#/{at}/"
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix) and ref[len(prefix):] not in found:
                found[ref[len(prefix):]] = definitions[ref[len(prefix):]]
                todo.append(definitions[ref[len(prefix):]])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found

"""The house of service/, drawn from the code: the homes in their layers, and an arrow for every home that
imports another, found by reading each module's imports (ast). Writes docs/architecture.svg:

    python docs/architecture_diagram.py

LAYERS is the declared order that tests/test_architecture.py holds the code to: a home imports only homes in
lower layers (never a peer in its own layer, never one above), and clinical imports no I/O library.
"""
from __future__ import annotations

import ast
import html
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SVG = REPO / "docs" / "architecture.svg"

# Bottom layer first. Each home: (name, what it holds).
LAYERS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("shared", "modules at the root of service/ that every home may use: settings, errors, body parsing, JSON, small helpers"),),
    (("clinical", "the pure pathway: record, facts, decisions, cards; value sets"),
     ("ops", "health probes and Prometheus metrics")),
    (("fhir", "the patient's data: prefetch, FHIR search, fixtures"),
     ("feedback", "issued cards and feedback entries"),
     ("security", "the guard before every CDS route")),
    (("api", "the CDS Hooks face: routes, services, engine, order hooks, answer, pages"),),
    (("app", "at the root of service/: create_app (__init__), the CLI and the WSGI entry point; wires every home together"),),
)
LAYER_OF = {name: level for level, homes in enumerate(LAYERS) for name, _ in homes}
APP_MODULES = frozenset({"service", "service.cli", "service.checkconfig", "service.wsgi"})     # the root modules above every home
# Libraries that reach outside the process (network, database, web framework, other programs).
IO_LIBRARIES = frozenset({"requests", "httpx", "aiohttp", "urllib", "urllib3", "http", "socket", "ssl", "flask",
                          "werkzeug", "sqlalchemy", "sqlite3", "psycopg", "psycopg2", "redis", "subprocess"})


@dataclass(frozen=True)
class Import:
    module: str         # the importing module, e.g. service.fhir.prefetch
    target: str         # the module imported, e.g. service.clinical.record, or requests
    line: int


def home_of(module: str) -> str:
    """service.api.routes -> api; service (create_app), service.cli, service.wsgi -> app; any other module at the
    root of service/ -> shared."""
    if module in APP_MODULES:
        return "app"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in _packages) else "shared"


_packages: set[str] = set()     # the sub-packages of the tree last read: service/<name>/__init__.py


def modules(package_root: Path = REPO / "service") -> dict[str, Path]:
    """service.fhir.prefetch -> its file, for every module under package_root (a package is its __init__)."""
    _packages.clear()
    _packages.update(p.parent.name for p in package_root.glob("*/__init__.py"))
    found = {}
    for path in sorted(package_root.rglob("*.py")):
        parts = path.relative_to(package_root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(package_root: Path = REPO / "service") -> list[Import]:
    """Every import in service/**/*.py, lazy ones inside functions included, relative ones made absolute;
    `from service.x import name` counts as importing service.x.name when that is a module, else service.x."""
    known = modules(package_root)
    found = []
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [Import(module, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
                found += [Import(module, target, node.lineno) for target in sorted(targets)]
    return found


def home_edges(found: list[Import]) -> dict[tuple[str, str], list[Import]]:
    """(importing home, imported home) -> the imports that make that arrow; imports within a home left out."""
    edges: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp in found:
        if imp.target == "service" or imp.target.startswith("service."):
            source, target = home_of(imp.module), home_of(imp.target)
            if source != target:
                edges[(source, target)].append(imp)
    return dict(edges)


def sizes(package_root: Path = REPO / "service") -> dict[str, tuple[list[str], int]]:
    """home -> (the file names it holds, its lines of Python)."""
    result: dict[str, tuple[list[str], int]] = defaultdict(lambda: ([], 0))
    for module, path in modules(package_root).items():
        home = home_of(module)
        names, lines = result[home]
        if path.stem != "__init__" or len(ast.parse(path.read_text()).body) > 1:    # an __init__ with code counts
            names = names + [path.stem]
        result[home] = (names, lines + len(path.read_text().splitlines()))
    return dict(result)


# --- drawing --------------------------------------------------------------------------------------------------
WIDTH, ROW, BOX_H, MARGIN, TOP = 1000, 165, 100, 30, 70
COLOURS = {"app": "#e8e8e8", "api": "#dbe9f7", "fhir": "#e3f1df", "feedback": "#f6ecd9", "security": "#f6dede",
           "clinical": "#ece3f5", "ops": "#eeeeee", "shared": "#f4f4f4"}
SPAN = {"app": 0.4, "api": 0.66, "fhir": 0.27, "feedback": 0.27, "security": 0.27, "clinical": 0.48, "ops": 0.3,
        "shared": 0.94}     # a box's share of the width


def _boxes() -> dict[str, tuple[float, float, float, float]]:
    """home -> (x, y, width, height); the top layer drawn at the top, the homes of a layer spread evenly."""
    boxes = {}
    for level, homes in enumerate(LAYERS):
        y = TOP + (len(LAYERS) - 1 - level) * ROW
        widths = [SPAN[name] * (WIDTH - 2 * MARGIN) for name, _ in homes]
        gap = (WIDTH - 2 * MARGIN - sum(widths)) / (len(homes) + 1)
        x = MARGIN + gap
        for (name, _), w in zip(homes, widths):
            boxes[name] = (x, y, w, BOX_H)
            x += w + gap
    return boxes


def _gaps(boxes, level: int) -> list[tuple[float, float]]:
    """The stretches of a layer's row no box covers, where an arrow passing the layer goes down."""
    spans = sorted((boxes[name][0], boxes[name][0] + boxes[name][2]) for name, _ in LAYERS[level])
    edges = [MARGIN / 2] + [x for span in spans for x in span] + [WIDTH - MARGIN / 2]
    return [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2) if edges[i + 1] - edges[i] > 12]


def _routes(edges, boxes) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """Each arrow's way down: from under its home to the top of the home it imports, passing any layer between
    through a gap between that layer's boxes, so that no arrow runs behind a box."""
    outgoing, incoming = defaultdict(list), defaultdict(list)
    for source, target in edges:
        outgoing[source].append(target)
        incoming[target].append(source)
    centre = {name: x + w / 2 for name, (x, y, w, h) in boxes.items()}

    def anchor(name, others, other, top):
        x, y, w, h = boxes[name]
        ordered = sorted(others, key=lambda o: (centre[o], o))
        return x + w * (ordered.index(other) + 1) / (len(ordered) + 1), (y if top else y + h)

    ends = {e: (anchor(e[0], outgoing[e[0]], e[1], False), anchor(e[1], incoming[e[1]], e[0], True)) for e in edges}
    passing = defaultdict(list)         # (level, gap) -> the arrows through it
    chosen = {}
    for edge, ((x1, _), (x2, _)) in ends.items():
        high, low = LAYER_OF[edge[0]], LAYER_OF[edge[1]]
        for level in range(high - 1, low, -1):
            share = (high - level) / (high - low)
            wanted = x1 + (x2 - x1) * share
            gap = min(_gaps(boxes, level), key=lambda g: abs((g[0] + g[1]) / 2 - wanted))
            passing[(level, gap)].append(edge)
            chosen[(edge, level)] = gap
    routes = {}
    for edge, ((x1, y1), (x2, y2)) in ends.items():
        points = [(x1, y1)]
        for level in range(LAYER_OF[edge[0]] - 1, LAYER_OF[edge[1]], -1):
            gap = chosen[(edge, level)]
            through = sorted(passing[(level, gap)], key=lambda e: (ends[e][0][0], ends[e][1][0]))
            x = gap[0] + (gap[1] - gap[0]) * (through.index(edge) + 1) / (len(through) + 1)
            y = TOP + (len(LAYERS) - 1 - level) * ROW
            points += [(x, y - 8), (x, y + BOX_H + 8)]
        routes[edge] = points + [(x2, y2)]
    return routes


def _wrap(words: list[str], width: int) -> list[str]:
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


def render(edges: dict[tuple[str, str], list[Import]], home_sizes: dict[str, tuple[list[str], int]]) -> str:
    boxes = _boxes()
    height = TOP + len(LAYERS) * ROW - (ROW - BOX_H) + MARGIN
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
           'font-family="DejaVu Sans, Arial, sans-serif">',
           '<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{MARGIN}" y="{MARGIN + 4}" font-size="17" font-weight="bold">avh-cds: the homes of service/, '
           'and an arrow for each home that imports another</text>',
           f'<text x="{MARGIN}" y="{MARGIN + 24}" font-size="12" fill="#555">Drawn from the imports by '
           'docs/architecture_diagram.py. Arrows point down only; grey ones are imports of the shared root modules.'
           '</text>']
    for (source, target), points in sorted(_routes(edges, boxes).items(), key=lambda r: (r[0][1] != "shared", r[0])):
        d = f"M{points[0][0]:.0f},{points[0][1]:.0f}"
        for (xa, ya), (xb, yb) in zip(points, points[1:]):
            bend = (yb - ya) / 2
            d += f" C{xa:.0f},{ya + bend:.0f} {xb:.0f},{yb - bend:.0f} {xb:.0f},{yb:.0f}"
        colour, width = ("#aaaaaa", 1.2) if target == "shared" else ("#444444", 1.8)
        out.append(f'<path class="arrow" data-from="{source}" data-to="{target}" d="{d}" fill="none" '
                   f'stroke="{colour}" stroke-width="{width}" marker-end="url(#head)"/>')
    for homes in LAYERS:
        for name, role in homes:
            x, y, w, h = boxes[name]
            files, lines = home_sizes.get(name, ([], 0))
            out.append(f'<g class="home" data-home="{name}"><rect x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" '
                       f'height="{h}" rx="8" fill="{COLOURS[name]}" stroke="#333" stroke-width="1.2"/>')
            out.append(f'<text x="{x + 10:.0f}" y="{y + 20:.0f}" font-size="15" font-weight="bold">{name}'
                       f'<tspan font-weight="normal" font-size="11" fill="#444">  {len(files)} modules · {lines} lines'
                       '</tspan></text>')
            role_lines = _wrap(role.split(), int((w - 20) / 6.6))[:2]
            file_lines = _wrap([f + "," for f in files[:-1]] + files[-1:], int((w - 20) / 6.7))[:4 - len(role_lines)]
            for i, line in enumerate(role_lines):
                out.append(f'<text x="{x + 10:.0f}" y="{y + 38 + i * 15:.0f}" font-size="11.5" fill="#222">'
                           f'{html.escape(line)}</text>')
            for i, line in enumerate(file_lines, start=len(role_lines)):
                out.append(f'<text x="{x + 10:.0f}" y="{y + 40 + i * 15:.0f}" font-size="11" fill="#555" '
                           f'font-family="DejaVu Sans Mono, monospace">{html.escape(line)}</text>')
            out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    SVG.write_text(render(home_edges(imports()), sizes()))
    print(f"wrote {SVG.relative_to(REPO)}")


if __name__ == "__main__":
    main()

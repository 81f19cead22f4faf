"""The house (docs/architecture.md): the import graph of service/**/*.py, read with ast, keeps to the layers
declared in docs/architecture_diagram.py. Each check is also run on a small made-up tree that breaks it."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from service.config import PROJECT_ROOT

_spec = importlib.util.spec_from_file_location("architecture_diagram", PROJECT_ROOT / "docs" / "architecture_diagram.py")
house = sys.modules["architecture_diagram"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(house)


def upward_imports(package_root: Path) -> list[str]:
    """Each import of a home by a home in the same layer or above it (or of a home LAYERS does not declare)."""
    problems = []
    for (source, target), found in sorted(house.home_edges(house.imports(package_root)).items()):
        if source not in house.LAYER_OF or target not in house.LAYER_OF:
            problems.append(f"{source} -> {target}: a home not in LAYERS")
        elif house.LAYER_OF[source] <= house.LAYER_OF[target]:
            problems += [f"{imp.module}:{imp.line} imports {imp.target} ({source} -> {target})" for imp in found]
    return problems


def clinical_impurities(package_root: Path) -> list[str]:
    """Each import in clinical of an I/O library or of any home but the shared root modules."""
    problems = []
    for imp in house.imports(package_root):
        if house.home_of(imp.module) != "clinical":
            continue
        top = imp.target.split(".")[0]
        if top in house.IO_LIBRARIES:
            problems.append(f"{imp.module}:{imp.line} imports the I/O library {imp.target}")
        elif top == "service" and house.home_of(imp.target) not in {"clinical", "shared"}:
            problems.append(f"{imp.module}:{imp.line} imports {imp.target} ({house.home_of(imp.target)})")
    return problems


def home_cycles(package_root: Path) -> list[list[str]]:
    """The cycles of the home graph (each as the homes in it, from its smallest name), whatever LAYERS says."""
    arrows: dict[str, set[str]] = {}
    for source, target in house.home_edges(house.imports(package_root)):
        arrows.setdefault(source, set()).add(target)
    cycles = set()

    def walk(path: list[str]) -> None:
        for nxt in sorted(arrows.get(path[-1], ())):
            if nxt == path[0]:
                start = path.index(min(path))
                cycles.add(tuple(path[start:] + path[:start]))
            elif nxt not in path:
                walk(path + [nxt])

    for home in sorted(arrows):
        walk([home])
    return [list(c) for c in sorted(cycles)]


SERVICE = PROJECT_ROOT / "service"


def test_no_home_imports_a_peer_or_a_higher_home():
    assert upward_imports(SERVICE) == []


def test_clinical_imports_no_io_library_and_no_other_home():
    assert clinical_impurities(SERVICE) == []


def test_no_two_homes_import_each_other_even_through_others():
    assert home_cycles(SERVICE) == []


def test_every_package_of_service_is_a_declared_home_that_says_what_it_holds_and_may_import():
    packages = {p.parent.name: p for p in SERVICE.glob("*/__init__.py")}
    assert set(packages) == set(house.LAYER_OF) - {"app", "shared"}
    for name, init in packages.items():
        text = init.read_text()
        assert text.startswith('"""'), f"service/{name}/__init__.py opens without a docstring"
        assert re.search(r"(?i)\bimport", text.split('"""')[1]), f"service/{name}/__init__.py: what may it import?"


def test_the_graph_is_read_from_the_code():
    """Spot checks against imports a reader can see in the files: lazy, `from service import`, packages."""
    edges = house.home_edges(house.imports(SERVICE))
    assert ("service.api.engine", "service.clinical.record") in {(i.module, i.target) for i in edges[("api", "clinical")]}
    assert ("service.cli", "service.fhir.replay") in {(i.module, i.target) for i in edges[("app", "fhir")]}  # lazy
    assert {i.target for i in edges[("app", "security")]} >= {"service.security"}   # the guard is the package itself
    assert ("fhir", "api") not in edges and ("clinical", "shared") in edges


def test_the_diagram_draws_every_arrow_of_the_code_and_no_other():
    """docs/architecture.svg is rewritten by `python docs/architecture_diagram.py`; its arrows must be today's."""
    drawn = set(re.findall(r'class="arrow" data-from="(\w+)" data-to="(\w+)"', (PROJECT_ROOT / "docs" / "architecture.svg").read_text()))
    assert drawn == set(house.home_edges(house.imports(SERVICE)))


# --- the checks catch what they are for: a made-up service/ tree with one fault of each kind ---------------------
def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "service" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "service"


CLEAN = {"__init__.py": "from service.api import routes\n", "config.py": "", "api/__init__.py": "",
         "api/routes.py": "from service.fhir.prefetch import fetch\nfrom service.clinical import facts\n",
         "fhir/__init__.py": "", "fhir/prefetch.py": "import requests\nfrom service.clinical.record import subject_id\n",
         "clinical/__init__.py": "", "clinical/record.py": "import json\nfrom service import config\n",
         "clinical/facts.py": "from .record import subject_id\n", "ops/__init__.py": "", "ops/metrics.py": "",
         "security/__init__.py": "from service.ops import metrics\n"}


def test_a_clean_made_up_tree_passes_every_check(tmp_path):
    root = _tree(tmp_path, CLEAN)
    assert (upward_imports(root), clinical_impurities(root), home_cycles(root)) == ([], [], [])


def test_fhir_importing_api_is_an_upward_import(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "fhir/search.py": "x = 1\n\ndef f():\n    from service.api.routes import g\n"})
    assert upward_imports(root) == ["service.fhir.search:4 imports service.api.routes (fhir -> api)"]
    assert home_cycles(root) == [["api", "fhir"]]


def test_a_shared_root_module_importing_a_home_and_peers_importing_each_other_are_refused(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "config.py": "from service.ops.metrics import m\n",
                            "ops/metrics.py": "from service import clinical\n"})
    assert upward_imports(root) == ["service.ops.metrics:1 imports service.clinical (ops -> clinical)",
                                    "service.config:1 imports service.ops.metrics (shared -> ops)"]


def test_clinical_doing_io_or_reaching_into_another_home_is_caught(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "clinical/valuesets.py": "import urllib.request\nfrom flask import g\n"
                                                              "from ..fhir import prefetch\nfrom service.ops import metrics\n"})
    assert clinical_impurities(root) == [
        "service.clinical.valuesets:1 imports the I/O library urllib.request",
        "service.clinical.valuesets:2 imports the I/O library flask",
        "service.clinical.valuesets:3 imports service.fhir.prefetch (fhir)",
        "service.clinical.valuesets:4 imports service.ops.metrics (ops)"]
    assert "service.clinical.valuesets:3 imports service.fhir.prefetch (clinical -> fhir)" in upward_imports(root)


def test_a_cycle_through_three_homes_is_found_whatever_the_layers_say(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "ops/metrics.py": "import service.security\n",
                            "clinical/record.py": "from service.ops import metrics\n"})
    assert home_cycles(root) == [["ops", "security"]]


def test_a_home_that_is_not_declared_is_refused(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "governance/__init__.py": "from service.feedback import store\n",
                            "feedback/__init__.py": "", "feedback/store.py": ""})
    assert upward_imports(root) == ["governance -> feedback: a home not in LAYERS"]

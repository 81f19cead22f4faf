"""The README and docs/ hold together: every relative link resolves (the file exists, and a #anchor names a
heading of the target markdown), and every setting is documented with its default."""
import dataclasses
import re
from pathlib import Path

import pytest

from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """Markdown without code blocks and inline code (a link written there is an example, not a link)."""
    return CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            base = slug(m.group(1))
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return found


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text()))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]          # http:, https:, mailto: ...


def broken(page: Path) -> list[str]:
    problems = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: no heading #{anchor} in {file.name}")
    return problems


def test_slugs_and_link_finding_work_as_github_does(tmp_path):
    assert slug("Set-up: two commands") == "set-up-two-commands"
    assert slug("The server process (`gunicorn.conf.py`)") == "the-server-process-gunicornconfpy"
    page = tmp_path / "a.md"
    page.write_text("# Top\n## Top\n[x](a.md#top-1) [y](missing.md) [z](#nowhere) ![i](img.png) "
                    "[w](https://example.org) `[c](code.md)`\n```\n[f](fenced.md)\n```\n")
    assert relative_links(page) == ["a.md#top-1", "missing.md", "#nowhere"]
    assert broken(page) == ["missing.md: no such file", "#nowhere: no heading #nowhere in a.md"]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    assert broken(page) == []


def test_the_readme_is_a_front_page_linking_every_doc():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 170
    linked = {t.partition("#")[0] for t in relative_links(ROOT / "README.md")}
    for doc in (ROOT / "docs").glob("*.md"):
        assert f"docs/{doc.name}" in linked, f"README does not link docs/{doc.name}"


@pytest.mark.parametrize("setting", [f for f in dataclasses.fields(Settings) if f.name != "extra"],
                         ids=lambda f: f.name)
def test_every_setting_is_documented_with_its_default(setting):
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(AVH_CDS_[A-Z_]+)` \| ([^|]*) \|",
                                                         (ROOT / "docs" / "configuration.md").read_text(), re.M)}
    name = "AVH_CDS_" + setting.name.upper()
    assert name in rows, f"{name} is not in docs/configuration.md"
    default = setting.default
    if isinstance(default, bool):
        assert re.search(r"`(0|false)`" if not default else r"`(1|true)`", rows[name]), rows[name]
    elif isinstance(default, (int, float)):
        number = re.search(r"\d[\d,_]*(\.\d+)?", rows[name])
        assert number and float(number.group(0).replace(",", "").replace("_", "")) == default, rows[name]
    elif isinstance(default, str) and default:
        assert default in rows[name], rows[name]


# A file of the repository named in a doc's inline code: `service/fhir/prefetch.py`, `cards/valuesets/`.
NAMED_PATH = re.compile(r"`((?:service|tests|bench|scripts|cards|deploy|docs|fhir_fixtures)/[\w./-]*)`")
# docs/performance.md is a log of past measurements: it names modules as they were when measured.
CURRENT_PAGES = [p for p in PAGES if p.name != "performance.md"]


@pytest.mark.parametrize("page", CURRENT_PAGES, ids=[str(p.relative_to(ROOT)) for p in CURRENT_PAGES])
def test_every_repository_path_a_doc_names_exists(page):
    """A newcomer follows a doc to the code: a module moved (service/prefetch.py -> service/fhir/prefetch.py) must
    not leave the doc pointing at nothing."""
    named = set(NAMED_PATH.findall(FENCE.sub("", page.read_text())))
    assert sorted(p for p in named if not (ROOT / p.rstrip("/")).exists()) == []

"""Every relative link in README.md and docs/*.md resolves, anchors included; the docs pages
link only inside docs/ (the rendered site holds nothing else; docs/notebooks/ is written by
make docs from notebooks/); and the README's Binder badge uses the one Binder address in
mkdocs.yml."""

import re
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at the first space or ")".
LINK = re.compile(r"!?\[(?:[^\]]|\][^(])*?\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose(text: str) -> str:
    """The Markdown outside fenced code blocks and inline code, where links are links."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I)]  # http:, https:, mailto:


def anchors(page: Path) -> set[str]:
    """The ids Python-Markdown's toc extension (what the site uses) gives the page's headings."""
    seen: dict[str, int] = {}
    ids = set()
    for line in prose(page.read_text()).splitlines():
        match = HEADING.match(line)
        if match:
            slug = slugify(re.sub(r"[*_]|\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2)), "-")
            ids.add(slug if slug not in seen else f"{slug}_{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return ids


def test_the_link_pattern_finds_links_and_leaves_code_alone():
    text = "See [a](docs/a.md#x) and ![fig](docs/f.png), not `[b](nope.md)` nor\n```\n[c](nope.md)\n```\n"
    assert LINK.findall(prose(text)) == ["docs/a.md#x", "docs/f.png"]
    assert slugify("Several GPUs or machines", "-") == "several-gpus-or-machines"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path_part, _, anchor = target.partition("#")
        file = (page.parent / path_part).resolve() if path_part else page
        if file.parent == ROOT / "docs" / "notebooks":  # make docs writes these from notebooks/
            file = ROOT / "notebooks" / file.name
            if not file.exists():
                broken.append(f"{target} (no notebook {file.name} in notebooks/)")
            continue
        if not file.exists():
            broken.append(f"{target} (no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file})")
        elif page.parent == ROOT / "docs" and not file.is_relative_to(ROOT / "docs"):
            broken.append(f"{target} (outside docs/: the rendered site would not have it)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading with the id {anchor!r} in {file.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: " + "; ".join(broken)


def test_readme_binder_badge_uses_the_address_in_mkdocs_yml():
    binder = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["extra"]["binder"]
    badges = re.findall(r"\]\((https://mybinder\.org/v2/[^)]+)\)", (ROOT / "README.md").read_text())
    assert badges and all(url.startswith(binder + "?") for url in badges), badges

"""The front door and the docs: no figure left as a placeholder, no section written twice."""

import re

import pytest

from tests.helpers import REPO_ROOT

PAGES = sorted(
    [REPO_ROOT / "README.md", REPO_ROOT / "bench" / "README.md", *(REPO_ROOT / "docs").glob("*.md")]
)
# SHOUTED_WORDS or ROW600K outside code: a figure someone meant to fill in
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9]+(?:_[A-Z0-9]+)+\b|\b[A-Z]+[0-9]+K\b")


def prose(text: str) -> str:
    """The page without code blocks and inline code (names of settings live there)."""
    return re.sub(r"`[^`]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_placeholder_is_left_in_the_prose(page):
    assert PLACEHOLDER.findall(prose(page.read_text())) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_heading_appears_twice_on_a_page(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # `# comments` in code
    headings = [line for line in text.splitlines() if line.startswith("#")]
    repeated = sorted({h for h in headings if headings.count(h) > 1})
    assert repeated == []

"""A person's browser for tests: Debian's headless Chromium loads a page, runs its JS, and
gives back the rendered DOM (parsed into a small tree to query) or a screenshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"  # git-ignored
# Virtual time runs the page's timers and waits for its fetches, so the DOM is the one a person
# sees after the first refreshes, with no wall-clock sleep.
VIRTUAL_TIME_MS = 5000
# Without the background-networking flags Chromium keeps calling home on a closed network.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--window-size=1400,1000",
]


def _chromium(url: str, *args: str) -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    with tempfile.TemporaryDirectory(prefix="speedq-chromium-") as profile:
        done = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def rendered(url: str) -> Node:
    """The page's DOM after its JS ran."""
    parser = _TreeBuilder()
    parser.feed(_chromium(url, "--dump-dom"))
    return parser.root


def screenshot(url: str, name: str) -> Path:
    """A PNG of the page as a person sees it, kept under artifacts/; its path is printed."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    _chromium(url, f"--screenshot={path}")
    assert path.stat().st_size > 0
    print(f"screenshot: {path}")
    return path


@dataclass
class Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The visible text, whitespace collapsed (script and style bodies are not shown)."""
        if self.tag in ("script", "style"):
            return ""
        parts = (c if isinstance(c, str) else c.text for c in self.children)
        return " ".join(" ".join(parts).split())

    def all(self, tag: str, **attrs: str) -> list[Node]:
        """Every descendant with this tag whose attributes hold these values (class: one of its classes)."""
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if child.tag == tag and all(_matches(child, k, v) for k, v in attrs.items()):
                    found.append(child)
                found.extend(child.all(tag, **attrs))
        return found

    def one(self, tag: str, **attrs: str) -> Node:
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag} {attrs}>, found {len(found)}"
        return found[0]

    def rows(self) -> list[list[str]]:
        """A table's body rows as cell texts."""
        return [[td.text for td in tr.all("td")] for tr in self.all("tr") if tr.all("td")]


def _matches(node: Node, key: str, value: str) -> bool:
    key = key.rstrip("_").replace("_", "-")  # class_ -> class, data_team -> data-team
    actual = node.attrs.get(key)
    return actual is not None and (value in actual.split() if key == "class" else actual == value)


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("document")
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)

"""A person's browser for tests: Debian's headless Chromium loads a page, runs its JS, and
gives back the rendered DOM (parsed into a small tree to query) or a screenshot; `LivePage`
keeps the page open for a test to click through it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
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


_NAVIGATED = "Inspected target navigated or closed"


class Navigated(Exception):
    """The page's document was replaced while Chromium evaluated in it (a navigation)."""


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


class LivePage:
    """A page in headless Chromium that a test acts on as a person would (clicks, follows links),
    driven over the DevTools protocol through a pipe (`--remote-debugging-pipe`: fd 3 takes
    commands, fd 4 gives answers, each a JSON message ended by NUL), so no socket or extra library.
    Runs in real time: `wait` polls until what a person would wait for is on the page."""

    def __init__(self, url: str) -> None:
        if not Path(CHROMIUM).exists():
            pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
        self._profile = tempfile.TemporaryDirectory(prefix="speedq-chromium-")
        to_chromium, self._commands = os.pipe()
        self._answers, from_chromium = os.pipe()

        def wire() -> None:  # in the child, before exec: its fd 3 and 4 are the pipe's ends
            os.dup2(to_chromium, 3)
            os.dup2(from_chromium, 4)

        flags = [f for f in FLAGS if not f.startswith("--virtual-time-budget")]
        self._proc = subprocess.Popen(
            [CHROMIUM, *flags, "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=wire, pass_fds=(3, 4),
            start_new_session=True,  # its renderers and helpers go with it at the end
        )
        os.close(to_chromium)
        os.close(from_chromium)
        self._buffer = b""
        self._next_id = 0
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self._call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
        self.goto(url)

    def _call(self, method: str, **params: object) -> dict:  # type: ignore[type-arg]
        self._next_id += 1
        message: dict[str, object] = {"id": self._next_id, "method": method, "params": params}
        if method.split(".")[0] not in ("Target",):
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._answers, 1 << 16)
                assert chunk, "chromium closed its DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:
                if _NAVIGATED in answer.get("error", {}).get("message", ""):
                    raise Navigated(f"{method}: {answer['error']}")
                assert "error" not in answer, f"{method}: {answer['error']}"
                return answer["result"]  # type: ignore[no-any-return]

    def evaluate(self, expression: str) -> object:
        """The value of a JS expression in the page (a promise is awaited)."""
        done = self._call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in done, f"{expression}: {done['exceptionDetails']}"
        return done["result"].get("value")

    def wait(self, expression: str, timeout: float = 20.0, what: str | None = None) -> object:
        """Poll until the expression is truthy on the page; its value. A page still navigating
        (its document replaced under the evaluation) is not there yet."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except Navigated:
                value = None
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what or expression}"
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """A click on the first element matching the CSS selector, as a person's would land."""
        found = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                              " if (!e) return false; e.click(); return true; })()")
        assert found, f"nothing on the page matches {selector}"

    def goto(self, url: str) -> None:
        self._call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && location.href !== 'about:blank'", what=f"{url} to load")

    def dom(self) -> Node:
        parser = _TreeBuilder()
        parser.feed(str(self.evaluate("document.documentElement.outerHTML")))
        return parser.root

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        path.write_bytes(base64.b64decode(self._call("Page.captureScreenshot", format="png")["data"]))
        print(f"screenshot: {path}")
        return path

    def close(self) -> None:
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._proc.wait()
        os.close(self._commands)
        os.close(self._answers)
        self._profile.cleanup()

    def __enter__(self) -> LivePage:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

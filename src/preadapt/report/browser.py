"""A report as a reader sees it: headless Chromium, driven over the DevTools protocol.

Chromium is started with ``--remote-debugging-pipe`` (it reads commands on file descriptor 3 and
writes answers and events on 4, each a JSON message ended by a NUL byte), so nothing beyond the
standard library and the ``chromium`` binary is needed: no websocket client, no browser download,
no network port. ``open_page`` loads a local HTML file in a window of a given size and returns a
``Page`` that evaluates JavaScript in it and takes PNG screenshots; ``measure_report`` is the
layout check the tests and ``preadapt report --screenshot`` rely on.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

WINDOW = (1280, 900)
"""The window a report is designed for and checked at: width, height in CSS pixels."""

EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--remote-debugging-pipe")
"""Headless, no sandbox (root in CI), and nothing that reaches for the network (which is closed here)."""

TIMEOUT = 60.0
"""Seconds to wait for one answer or page load (a cold start on a loaded 2-core machine takes a few)."""


class BrowserError(RuntimeError):
    """Chromium is missing, exited, or did not answer in time."""


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable: ``$PREADAPT_CHROMIUM`` when set, else the first
    of EXECUTABLES on the PATH; None when there is none."""
    override = os.environ.get("PREADAPT_CHROMIUM")
    if override:
        return override if Path(override).is_file() else shutil.which(override)
    return next((path for path in map(shutil.which, EXECUTABLES) if path), None)


class _Pipe:
    """The DevTools protocol over Chromium's pipe: numbered commands, answers matched by id, events queued."""

    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int):
        self.process, self.to_browser, self.from_browser = process, to_browser, from_browser
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not answer within {TIMEOUT:.0f} s")
            ready, _, _ = select.select([self.from_browser], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited (code {self.process.poll()})")
                self.buffer += chunk
            elif self.process.poll() is not None:
                raise BrowserError(f"Chromium exited (code {self.process.returncode})")
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, timeout: float = TIMEOUT, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are queued)."""
        self.next_id += 1
        command = {"id": self.next_id, "method": method, "params": params}
        if session is not None:
            command["sessionId"] = session
        os.write(self.to_browser, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._message(deadline)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message', message['error'])}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, session: str | None = None, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next event ``method`` (of ``session``), from the queue or the pipe."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method and (session is None or event.get("sessionId") == session):
                    return self.events.pop(i).get("params", {})
            self.events.append(self._message(deadline))


@dataclass
class Page:
    """One tab of headless Chromium showing a local file at a fixed window size."""

    pipe: _Pipe
    session: str
    width: int
    height: int
    url: str = field(default="")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable; promises awaited)."""
        result = self.pipe.send("Runtime.evaluate", self.session, expression=expression, returnByValue=True,
                                awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"JavaScript raised: {details.get('exception', {}).get('description', details)}")
        return result.get("result", {}).get("value")

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        """Write a PNG of the window (``full_page``: of the whole page, window-wide) and return its path."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = int(self.evaluate("document.documentElement.scrollHeight"))
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": self.width, "height": height,
                                                            "scale": 1})
        data = self.pipe.send("Page.captureScreenshot", self.session, **params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path


_TRAMPOLINE = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
               "os.close(int(sys.argv[1])); os.close(int(sys.argv[2])); os.execvp(sys.argv[3], sys.argv[3:])")
"""Run in the child: the pipe ends to descriptors 3 and 4 (inheritable), then exec Chromium."""


def _above_4(fd: int) -> int:
    """``fd`` moved to a descriptor number of at least 5 (close-on-exec, like the original), so that
    moving one pipe end to 3 or 4 in the child cannot overwrite the other."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return moved


@contextmanager
def open_page(html: str | Path, window: tuple[int, int] = WINDOW, executable: str | None = None) -> Iterator[Page]:
    """Open the local file ``html`` in headless Chromium with a window of ``window`` CSS pixels
    (device scale 1) and yield the loaded ``Page`` (the load event has fired: every image has loaded
    or failed). Raises BrowserError when no Chromium is found or it does not start."""
    executable = executable or find_chromium()
    if executable is None:
        raise BrowserError("no Chromium found: install the Debian package chromium (or set PREADAPT_CHROMIUM)")
    width, height = window
    url = Path(html).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="preadapt-chromium-") as profile:
        # Chromium reads commands on fd 3 and writes on fd 4: two pipes, moved there in the child by a
        # small Python trampoline that then execs Chromium (no preexec_fn, unsafe in a threaded parent).
        commands_read, commands_write = os.pipe()
        answers_read, answers_write = os.pipe()
        commands_read, answers_write = _above_4(commands_read), _above_4(answers_write)
        command = [executable, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _TRAMPOLINE, str(commands_read), str(answers_write), *command],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(commands_read, answers_write))
        except OSError as error:
            for fd in (commands_read, commands_write, answers_read, answers_write):
                os.close(fd)
            raise BrowserError(f"could not start {executable}: {error}") from error
        os.close(commands_read)
        os.close(answers_write)
        pipe = _Pipe(process, commands_write, answers_read)
        try:
            target = pipe.send("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            pipe.send("Page.enable", session)
            pipe.send("Runtime.enable", session)
            pipe.send("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
            pipe.send("Page.navigate", session, url=url)
            pipe.wait_for("Page.loadEventFired", session)
            yield Page(pipe, session, width, height, url)
        finally:
            try:
                pipe.send("Browser.close", timeout=5.0)
            except (BrowserError, OSError):
                pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            os.close(commands_write)
            os.close(answers_read)


MEASURE = r"""
(() => {
  const width = document.documentElement.clientWidth, height = window.innerHeight;
  const box = (element) => {
    const r = element.getBoundingClientRect();
    return {left: r.left + window.scrollX, right: r.right + window.scrollX, top: r.top + window.scrollY,
            bottom: r.bottom + window.scrollY, text: element.textContent.trim()};
  };
  const images = [...document.images].map((image) => ({src: image.getAttribute("src"),
    loaded: image.complete && image.naturalWidth > 0, right: box(image).right}));
  const h1 = document.querySelector("h1");
  const VERDICT = ".status-holds, .status-violated, .status-inconclusive, .status-premise-not-met";
  const cells = (root) => [...root.querySelectorAll("td")].filter((td) => td.querySelector(VERDICT));
  const headline = document.querySelector("#headline");
  const first = {headline: headline ? box(headline) : null, verdicts: headline ? cells(headline).map(box) : []};
  const text = document.body.innerText;
  const pageHeight = document.documentElement.scrollHeight, pageWidth = document.documentElement.scrollWidth;
  // Every <details> opened: a collapsed table must fit the window too once the reader opens it.
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const verdicts = cells(document).map(box);
  const tables = [...document.querySelectorAll("table")].map((t) => ({right: box(t).right,
    header: t.querySelector("th") ? t.querySelector("th").textContent.trim() : ""}));
  return {width, height, page_height: pageHeight, page_width: pageWidth,
          open_page_width: document.documentElement.scrollWidth, title: h1 ? h1.textContent.trim() : "",
          images, first, text_start: text.slice(0, 3000), verdicts, tables};
})()
"""
"""The layout facts of a report page, in document coordinates (CSS pixels): the page's size and
text before any <details> is opened, the verdict cells and tables with every <details> open."""


@dataclass
class Layout:
    """What ``measure_report`` found on a report page at its window size."""

    width: int
    height: int
    page_height: int
    page_width: int
    title: str
    images: list[dict[str, Any]]
    headline: dict[str, Any] | None
    headline_verdicts: list[dict[str, Any]]
    text_start: str
    verdicts: list[dict[str, Any]]
    tables: list[dict[str, Any]]

    @property
    def broken_images(self) -> list[str]:
        """The sources of the images that failed to load."""
        return [image["src"] for image in self.images if not image["loaded"]]

    @property
    def verdicts_off_screen(self) -> list[dict[str, Any]]:
        """The verdict cells (table cells holding a verdict badge, every <details> open) whose right
        edge lies beyond the window's width."""
        return [verdict for verdict in self.verdicts if verdict["right"] > self.width + 0.5]

    @property
    def tables_too_wide(self) -> list[dict[str, Any]]:
        """The tables (every <details> open) whose right edge lies beyond the window's width."""
        return [table for table in self.tables if table["right"] > self.width + 0.5]

    @property
    def headline_in_first_screen(self) -> bool:
        """Whether the headline has verdict cells and each lies within the first window (no scrolling)."""
        if self.headline is None or not self.headline_verdicts:
            return False
        return all(v["bottom"] <= self.height and v["right"] <= self.width for v in self.headline_verdicts)


def measure_report(html: str | Path, window: tuple[int, int] = WINDOW, screenshot: str | Path | None = None,
                   full_page: bool = False) -> Layout:
    """Load a report in headless Chromium at ``window`` and measure its layout (see ``Layout``);
    with ``screenshot``, also write a PNG of the first screen (or, ``full_page``, of the whole page)
    there, taken before any ``<details>`` is opened."""
    with open_page(html, window) as page:
        if screenshot is not None:
            page.screenshot(screenshot, full_page=full_page)
        facts = page.evaluate(MEASURE)
    return Layout(width=facts["width"], height=facts["height"], page_height=facts["page_height"],
                  page_width=max(facts["page_width"], facts["open_page_width"]), title=facts["title"],
                  images=facts["images"], headline=facts["first"]["headline"],
                  headline_verdicts=facts["first"]["verdicts"], text_start=facts["text_start"],
                  verdicts=facts["verdicts"], tables=facts["tables"])


def screenshot_report(html: str | Path, path: str | Path | None = None, window: tuple[int, int] = WINDOW,
                      full_page: bool = False) -> Path:
    """Write a PNG of a report as a reader first sees it (``path``, default ``report.png`` beside it)."""
    html = Path(html)
    target = Path(path) if path is not None else html.with_suffix(".png")
    with open_page(html, window) as page:
        return page.screenshot(target, full_page=full_page)

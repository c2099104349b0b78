"""Open a page in headless Chromium and report what a user's browser would see: console errors,
uncaught exceptions, every network request, what the DOM holds, a screenshot.

Speaks the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages separated by NUL
on file descriptors 3 and 4), so it needs no package beyond the standard library.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
         "--remote-debugging-pipe"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Browser:
    def __init__(self, exe: str, width: int = 1300, height: int = 1000):
        self.profile = tempfile.mkdtemp(prefix="perfscope-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # park the child's ends above the low numbers, then place them on 3 and 4
        a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 20)
        b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 21)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def child() -> None:
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child, pass_fds=(3, 4))
        os.close(a)
        os.close(b)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    # ---- protocol ---------------------------------------------------------------------
    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        return self._id

    def _read(self, timeout: float) -> dict | None:
        while b"\0" not in self._buf:
            r, _, _ = select.select([self._from_chrome], [], [], timeout)
            if not r:
                return None
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        i = self._send(method, params, session)
        end = time.time() + timeout
        while time.time() < end:
            msg = self._read(end - time.time())
            if msg is None:
                break
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)
        raise TimeoutError(method)

    def wait_for(self, method: str, timeout: float = 60.0) -> dict:
        for e in self.events:
            if e.get("method") == method:
                return e
        end = time.time() + timeout
        while time.time() < end:
            msg = self._read(end - time.time())
            if msg is None:
                break
            self.events.append(msg)
            if msg.get("method") == method:
                return msg
        raise TimeoutError(method)

    def pump(self, seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            msg = self._read(max(0.0, end - time.time()))
            if msg is None:
                return
            self.events.append(msg)

    def close(self) -> None:
        try:
            self._send("Browser.close")
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


def visit(path: Path, script: str, *, width: int = 1300, height: int = 1000,
          settle_s: float = 2.0) -> dict[str, Any]:
    """Load ``path``; return console errors, exceptions, requests, ``script``'s value (a JS
    expression evaluated after load) and a screenshot (PNG bytes) of the first screen."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium")
    b = Browser(exe, width, height)
    try:
        target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sess = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        for domain in ("Network", "Runtime", "Log", "Page"):
            b.call(f"{domain}.enable", session=sess)
        b.call("Page.navigate", {"url": path.resolve().as_uri()}, session=sess)
        b.wait_for("Page.loadEventFired", timeout=120)
        b.pump(settle_s)
        value = b.call("Runtime.evaluate", {"expression": script, "returnByValue": True},
                       session=sess)["result"].get("value")
        shot = base64.b64decode(b.call("Page.captureScreenshot", {"format": "png"},
                                       session=sess)["data"])
        b.pump(0.5)
    finally:
        b.close()
    ev = b.events
    console = [e["params"] for e in ev if e.get("method") == "Runtime.consoleAPICalled"]
    return {
        "errors": [c for c in console if c.get("type") in ("error", "assert")]
        + [e["params"]["entry"] for e in ev if e.get("method") == "Log.entryAdded"
           and e["params"]["entry"].get("level") == "error"],
        "exceptions": [e["params"] for e in ev if e.get("method") == "Runtime.exceptionThrown"],
        "requests": [e["params"]["request"]["url"] for e in ev
                     if e.get("method") == "Network.requestWillBeSent"],
        "value": value,
        "screenshot": shot,
    }

"""The test IdP, shared by the oidc plugin's tests (``conftest.py``) and ``bench/soak.py``:
start ``server.mjs`` (the npm ``oidc-provider``, installed with ``npm ci`` from the committed
lockfile on first use) on 127.0.0.1, and approve a device login through the provider's own
pages, as a user does in a browser.

Importable as ``local_idp`` once this directory is on ``sys.path``; it needs httpx and the
plugin (``mcp_acp_oidc``), nothing from pytest.
"""

from __future__ import annotations

import html
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
from mcp_acp_oidc.device import DeviceAuthorization

__all__ = ["IDP_DIR", "IdPError", "approve_device", "install", "running"]

IDP_DIR = Path(__file__).resolve().parent


class IdPError(RuntimeError):
    """The test IdP could not be installed or started (the message says why)."""


def install() -> None:
    """``npm ci`` in this directory unless ``oidc-provider`` is installed already."""
    if (IDP_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise IdPError(f"npm is needed to install the test IdP ({IDP_DIR / 'package.json'})")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=IDP_DIR, check=True, timeout=600)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(
    access_token_ttl: int | None = None, *, stderr: int | IO[bytes] = subprocess.DEVNULL
) -> Iterator[str]:
    """The IdP on a free port of 127.0.0.1 (installed first if need be); yields its issuer
    URL and stops it afterwards. ``access_token_ttl``: the access tokens' lifetime in
    seconds (the server's default: 300)."""
    install()
    node = shutil.which("node")
    if node is None:
        raise IdPError("node is needed to run the test IdP")
    argv = [node, "server.mjs", str(_free_port())]
    if access_token_ttl is not None:
        argv.append(str(access_token_ttl))
    proc = subprocess.Popen(argv, cwd=IDP_DIR, stdout=subprocess.PIPE, stderr=stderr)
    try:
        first = _first_line_then_drain(proc)
        if not first.startswith("ready "):
            raise IdPError(f"the test IdP did not start: {first!r} (exit {proc.poll()})")
        yield first.split()[1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _first_line_then_drain(proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    """The server's first line of output ("ready <issuer>"), or "" after ``timeout``
    seconds; whatever it prints later is read and dropped, so a long run never fills the
    pipe and stalls it."""
    lines: list[str] = []
    first_seen = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not first_seen.is_set():
                lines.append(line.decode(errors="replace"))
                first_seen.set()
        first_seen.set()  # ended without a line

    threading.Thread(target=read, daemon=True).start()
    first_seen.wait(timeout)
    return lines[0] if lines else ""


def _form(page: httpx.Response) -> tuple[str, dict[str, str]]:
    match = re.search(r'<form[^>]*action="([^"]*)"', page.text)
    action = html.unescape(match.group(1)) if match else str(page.url)
    inputs = re.findall(
        r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text
    )
    return str(page.url.join(action)), {k: html.unescape(v) for k, v in inputs}


@contextmanager
def jwks_down(issuer: str) -> Iterator[None]:
    """The IdP's ``/jwks`` answers 503 inside the block (everything else works): its keys
    unavailable for a while, as in a partial outage."""
    httpx.post(f"{issuer}/test/jwks", params={"down": "1"}).raise_for_status()
    try:
        yield
    finally:
        httpx.post(f"{issuer}/test/jwks", params={"down": "0"}).raise_for_status()


@contextmanager
def keys_rotated(issuer: str) -> Iterator[None]:
    """Inside the block the IdP publishes a second signing key and signs access tokens
    with it (a key rotation); after it, the first key alone again."""
    httpx.post(f"{issuer}/test/keys", params={"rotate": "1"}).raise_for_status()
    try:
        yield
    finally:
        httpx.post(f"{issuer}/test/keys", params={"rotate": "0"}).raise_for_status()


def approve_device(
    authorization: DeviceAuthorization, login: str = "alice", *, deny: bool = False
) -> None:
    """What a user does in the browser, done with httpx through devInteractions pages."""
    assert authorization.verification_uri_complete is not None
    with httpx.Client(follow_redirects=True, timeout=10) as browser:
        page = browser.get(authorization.verification_uri_complete)
        action, fields = _form(page)
        page = browser.post(action, data={**fields, "confirm": "yes"})
        if deny:
            abort = re.search(r'href="([^"]*/abort)"', page.text)
            assert abort is not None
            browser.get(html.unescape(abort.group(1)))
            return
        action, fields = _form(page)
        page = browser.post(action, data={**fields, "login": login, "password": "x"})
        action, fields = _form(page)
        page = browser.post(action, data=fields)
        assert "Success" in page.text

"""Names the proxy and the filesystem server would read differently are refused.

The proxy follows symlinks before deciding, so a rule sees where a path really leads. That
holds only if it follows the same links the backend will. Against the real filesystem
server, three ways they could part, each with a symlink out of the allowed tree:

* ``café`` asked for in NFC where the disk holds the NFD name (as macOS writes it): the
  server opens the equivalent entry it finds and follows it, while the proxy saw a path
  that does not exist; the same for ``Key`` beside ``\u212aey`` (the Kelvin sign is ``K``
  in NFC), and for names with characters Python's Unicode tables do not know yet, which
  Node's newer ones compose (U+16D67 twice is U+16D68 in Unicode 16);
* a name that is not valid Unicode (a lone surrogate is the byte 0xFF to Python, U+FFFD to
  Node) or U+FFFD itself (Node's name for an entry it could not decode);
* a link to ``/proc/self/cwd``: each process follows it into its own working directory.

Each is denied as ambiguous before any engine is asked, the backend never sees it, and no
file outside the tree is read or written.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from proxy_helpers import FILESYSTEM, Proxy, configure, proxy_env, records

SECRET = "TOP SECRET outside the allowed tree\n"


def _read(path: str) -> dict[str, object]:
    return {"name": "read_text_file", "arguments": {"path": path}}


def test_names_the_backend_would_read_differently_are_refused(
    isolated_home: Path, tmp_path: Path, node_peers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "srv"
    allowed, outside = base / "allowed", base / "outside"
    allowed.mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (allowed / "ok.txt").write_text("fine\n")
    (allowed / "cafe\u0301").symlink_to(outside)  # NFD on disk
    os.symlink(bytes(outside), bytes(allowed) + b"/\xff")  # not UTF-8: Node reads U+FFFD
    (allowed / "here").symlink_to("/proc/self/cwd")
    (allowed / "\u212aey").symlink_to(outside)  # NFC: "Key"
    (allowed / chr(0x16D68)).symlink_to(outside)  # NFC of U+16D67 twice, to Node
    policy = {
        "version": "1",
        "rules": [
            {"id": "allowed", "effect": "allow", "conditions": {"path_pattern": f"{allowed}/**"}},
            {"id": "outside", "effect": "deny", "conditions": {"path_pattern": f"{outside}/**"}},
        ],
    }
    log_dir = configure(isolated_home, "node", [str(FILESYSTEM / "index.js"), str(base)], policy)
    config_file = isolated_home / ".config" / "mcp-acp" / "config.json"
    config = json.loads(config_file.read_text())
    config["backend"]["cwd"] = str(outside)  # where the backend's /proc/self/cwd leads
    config_file.write_text(json.dumps(config))
    monkeypatch.chdir(allowed)  # and the proxy's: an allowed place
    proxy = Proxy(isolated_home, proxy_env(isolated_home))
    try:
        proxy.initialize()
        control = proxy.call("tools/call", _read(f"{allowed}/ok.txt"))
        assert control["result"]["content"][0]["text"] == "fine\n"
        attempts = {
            "NFC name of an NFD link": _read(f"{allowed}/caf\u00e9/secret.txt"),
            "write through it": {
                "name": "write_file",
                "arguments": {"path": f"{allowed}/caf\u00e9/planted.txt", "content": "x"},
            },
            "U+FFFD for an undecodable name": _read(f"{allowed}/\ufffd/secret.txt"),
            "lone surrogate": _read(f"{allowed}/\udcff/secret.txt"),
            "link into /proc/self": _read(f"{allowed}/here/secret.txt"),
            "ASCII name of a Kelvin-sign link": _read(f"{allowed}/Key/secret.txt"),
            "newer Unicode than ours": _read(f"{allowed}/{chr(0x16D67) * 2}/secret.txt"),
        }
        for what, params in attempts.items():
            answer = proxy.call("tools/call", params)
            assert "error" in answer, (what, answer)
            assert answer["error"]["data"]["rule"] == "builtin-ambiguous-path", (what, answer)
            assert SECRET not in json.dumps(answer), what
        assert proxy.close() == 0
    finally:
        if proxy.proc.poll() is None:
            proxy.proc.kill()
            proxy.close()
    assert not (outside / "planted.txt").exists()
    forwarded = [
        r
        for r in records(log_dir, "operations")
        if r.get("direction") == "client_to_server" and r.get("mcp_method") == "tools/call"
    ]
    assert [r["outcome"] for r in forwarded] == ["forwarded"] + ["denied"] * 7


JSON_ARGS = Path(__file__).parent / "peers" / "json_args_server.py"


def test_a_path_in_an_argument_sent_as_json_text_is_read_as_the_server_reads_it(
    isolated_home: Path, tmp_path: Path
) -> None:
    """The mcp SDK's ``MCPServer`` (and FastMCP) decode an argument sent as JSON text into
    the object or list its type asks for. For a tool the registry does not know, the proxy
    reads the paths in such text as it reads them in the object: a deny rule on the path
    holds, and so does the guard on mcp-acp's own files; other paths pass as they would."""
    project = tmp_path / "p"
    project.mkdir()
    (project / ".env").write_text(SECRET)
    (project / "notes.md").write_text("fine\n")
    policy = {
        "version": "1",
        "rules": [
            {"id": "no-env", "effect": "deny", "conditions": {"path_pattern": "**/.env"}},
            {"id": "fs", "effect": "allow", "conditions": {"tool_name": "fs_*"}},
        ],
    }
    log_dir = configure(isolated_home, sys.executable, [str(JSON_ARGS)], policy)
    own = isolated_home / ".config" / "mcp-acp" / "policy.json"
    proxy = Proxy(isolated_home, proxy_env(isolated_home))
    try:
        proxy.initialize()

        def read(opts: object) -> dict[str, object]:
            call = {"name": "fs_read", "arguments": {"opts": opts}}
            return proxy.answer(proxy.request("tools/call", call))

        for path, rule in ((project / ".env", "no-env"), (own, "builtin-protected-path")):
            for opts in ({"path": str(path)}, json.dumps({"path": str(path)})):
                denied = read(opts)
                assert denied["error"]["data"] == {"rule": rule}  # type: ignore[index]
        fine = read(json.dumps({"path": str(project / "notes.md")}))
        assert fine["result"]["content"][0]["text"] == "fine\n"  # type: ignore[index]
    finally:
        proxy.close()
    assert SECRET not in (log_dir / "operations.jsonl").read_text()


@pytest.mark.parametrize("shape", ["nested 1,000 deep", "a number of 5,000 digits"])
def test_json_text_the_proxy_cannot_read_whole_is_denied_not_passed_unread(
    isolated_home: Path, tmp_path: Path, shape: str
) -> None:
    """JSON text beside a denied path that this proxy's reader refuses — nested deeper than
    Python's stack allows it, or with a number longer than 4,300 digits — while the server
    reads it (its limits raised, as a server's may be): the text was passed on unread, and
    the server read the denied file. The call's paths are ambiguous now: denied."""
    project = tmp_path / "p"
    project.mkdir()
    (project / ".env").write_text(SECRET)
    policy = {
        "version": "1",
        "rules": [
            {"id": "no-env", "effect": "deny", "conditions": {"path_pattern": "**/.env"}},
            {"id": "fs", "effect": "allow", "conditions": {"tool_name": "fs_*"}},
        ],
    }
    args = [str(JSON_ARGS), "--raised-limits"]
    log_dir = configure(isolated_home, sys.executable, args, policy)
    filler = "[" * 1000 + "]" * 1000 if shape.startswith("nested") else "1" * 5000
    opts = '{"path": ' + json.dumps(str(project / ".env")) + ', "pad": ' + filler + "}"
    proxy = Proxy(isolated_home, proxy_env(isolated_home))
    try:
        proxy.initialize()
        call = {"name": "fs_read", "arguments": {"opts": opts}}
        denied = proxy.answer(proxy.request("tools/call", call))
    finally:
        proxy.close()
    assert denied["error"]["data"] == {"rule": "builtin-ambiguous-path"}, denied
    assert "JSON text too deep, or with too long a number" in denied["error"]["message"]
    assert SECRET not in json.dumps(denied)
    assert SECRET not in (log_dir / "operations.jsonl").read_text()

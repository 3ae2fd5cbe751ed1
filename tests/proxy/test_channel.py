"""Backend channels: which one a config gets, and what the stdio path does not pay for."""

from __future__ import annotations

import subprocess
import sys

from mcp_acp.config import HttpBackend, StdioBackend
from mcp_acp.proxy.channel import open_channel


def test_a_stdio_proxy_never_imports_the_mcp_sdk() -> None:
    """Importing ``mcp`` costs most of a second; only HTTP backends need it."""
    code = (
        "import sys\n"
        "from mcp_acp.config import StdioBackend\n"
        "from mcp_acp.proxy import serve\n"
        "from mcp_acp.proxy.channel import open_channel\n"
        "open_channel(StdioBackend(command='cat'))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'httpx2'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_backend_ids_are_what_policies_match() -> None:
    assert open_channel(StdioBackend(command="npx", args=["-y", "x"])).backend_id == "npx"
    http = open_channel(HttpBackend(url="https://mcp.example.com/mcp?key=secret#frag"))
    assert http.backend_id == "https://mcp.example.com/mcp"  # a query may carry a secret

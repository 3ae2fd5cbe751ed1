"""The ``keychain`` storage against a real Secret Service: gnome-keyring on a private D-Bus.

Each run starts its own session bus (``dbus-run-session``) and an unlocked gnome-keyring
in a throw-away HOME, then a child Python stores, reads and deletes a token through the
plugin as mcp-acp loads it. CI installs gnome-keyring and dbus (see ``.ci/run``); locally
the test is skipped only when those programs are missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from secret_service import needs_secret_service, run_child

pytestmark = needs_secret_service

CHILD = r"""
import json, sys
from datetime import UTC, datetime
from pathlib import Path

from keyring.backends import SecretService

from mcp_acp.models import StoredToken
from mcp_acp.plugins import load_plugins
from mcp_acp.registry import Kind, PluginContext

home = Path(sys.argv[1])
registration = load_plugins(allow=["keychain"]).registry.get(Kind.TOKEN_STORAGE, "keychain")
options = registration.config_model.model_validate({"client_id": "acp-cli"})
context = PluginContext(config_path=home / ".config" / "mcp-acp" / "config.json", log_dir=home)
storage = registration.factory(options, context)
issuer = "https://idp.example.test/realms/acp"
token = StoredToken(
    issuer=issuer,
    access_token="canary-secret-service-access",
    refresh_token="canary-secret-service-refresh",
    expires_at=datetime(2031, 1, 1, tzinfo=UTC),
)
before = storage.load(issuer)
storage.save(token)
again = registration.factory(options, context).load(issuer)  # a fresh instance reads it
item = SecretService.Keyring().get_password("mcp-acp", "acp-cli@" + issuer)
storage.delete(issuer)
after = storage.load(issuer)
print(json.dumps({
    "description": storage.description,
    "before": before is None,
    "read_back": again == token,
    "item_is_json_record": json.loads(item)["refresh_token"] == token.refresh_token,
    "after_delete": after is None,
}))
"""


def test_store_read_delete_in_gnome_keyring(tmp_path: Path) -> None:
    result = run_child(tmp_path, CHILD)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["description"] == (
        "keychain (keyring.backends.SecretService.Keyring, service 'mcp-acp')"
    )
    assert outcome["before"] is True
    assert outcome["read_back"] is True
    assert outcome["item_is_json_record"] is True
    assert outcome["after_delete"] is True
    # the plaintext backend installed beside it (keyrings.alt) was never written to
    assert not (tmp_path / "home" / ".local" / "share" / "python_keyring").exists()
    # no token value leaked to the output
    assert "canary" not in result.stdout + result.stderr

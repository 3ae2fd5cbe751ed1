"""One stored token, two configs in two directories: the refresh lock belongs to the
token, so two proxies that find it due at once spend its refresh token once.

Each case runs a child Python in its own D-Bus session with an unlocked gnome-keyring
(``dbus-run-session``, a throw-away HOME), against the real oidc-provider, which rotates
refresh tokens and revokes the grant when a spent one is presented again. The child
builds two ``oidc`` identity providers exactly as mcp-acp builds them (``load_runtime``)
from configs in two directories that share one stored token — the keychain item (named
by issuer only), or one encrypted token file both configs point at — and lets both
refresh at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from secret_service import needs_secret_service, run_child

pytestmark = needs_secret_service

IDP_DIR = Path(__file__).resolve().parent / "idp"

CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path

sys.path.insert(0, sys.argv[1])
import local_idp
from mcp_acp.runtime import load_runtime

issuer, storage_kind, home = sys.argv[2], sys.argv[3], Path(sys.argv[4])
shared = home / "shared"  # the encrypted-file case: one token file for both configs
storage = {"use": "keychain"}
if storage_kind == "encrypted-file":
    storage = {"use": "encrypted-file", "config": {
        "directory": str(shared / "tokens"), "key_file": str(shared / "token-storage.key")}}

def config(directory: Path) -> Path:
    directory.mkdir(mode=0o700, parents=True)
    path = directory / "config.json"
    path.write_text(json.dumps({
        "version": 1,
        "backend": {"command": sys.executable, "args": ["-c", "pass"]},
        "plugins": {"allow": ["oidc", "keychain"]},
        "identity": {"use": "oidc", "config": {
            "issuer": issuer, "client_id": "mcp-acp-cli", "audience": "urn:mcp-acp:proxy",
            "scope": "openid offline_access email mcp:tools", "token_type": "at+jwt"}},
        "token_storage": storage,
        "audit": {"log_dir": str(directory / "logs")}}))
    path.chmod(0o600)
    return path

def build(path: Path, ahead: float):
    provider = load_runtime(path).build("identity")
    provider._clock = lambda: time.time() + ahead  # the injected clock: token due or not
    return provider

async def main() -> None:
    a_config, b_config = config(home / "projA"), config(home / "projB")
    a, b = build(a_config, 0), build(b_config, 0)

    def show(authorization):
        loop = asyncio.get_running_loop()
        loop.create_task(asyncio.to_thread(local_idp.approve_device, authorization))

    await a.login(show)
    # both serve a request first (discovery and keys fetched): the race below is the
    # refresh alone, as between two running proxies
    await a.current_subject(), await b.current_subject()
    login = await asyncio.to_thread(a.storage.load, issuer)
    a._clock = b._clock = lambda: time.time() + 270  # both now find the token due
    both = await asyncio.gather(a.current_subject(), b.current_subject(), return_exceptions=True)
    after = await asyncio.to_thread(a.storage.load, issuer)
    # a proxy started later: its refresh presents what is stored; after a spent refresh
    # token was presented twice, the provider has revoked the grant and this fails
    later = build(a_config, 270)
    try:
        later_subject = (await later.current_subject()).subject_id
    except Exception as exc:
        later_subject = type(exc).__name__
    end = await asyncio.to_thread(a.storage.load, issuer)
    print(json.dumps({
        "same_lock": str(a.lock_path) == str(b.lock_path),
        "lock_mode": oct(a.lock_path.stat().st_mode & 0o777),
        "lock_dir_mode": oct(a.lock_path.parent.stat().st_mode & 0o777),
        "both": [getattr(s, "subject_id", type(s).__name__) for s in both],
        "rotated": after is not None and after.refresh_token != login.refresh_token,
        "later": later_subject,
        "refreshed_again": end is not None and end.refresh_token != after.refresh_token,
        "stored_at_end": end is not None,
    }))

asyncio.run(main())
"""


@pytest.mark.parametrize("storage_kind", ["keychain", "encrypted-file"])
def test_two_configs_sharing_a_token_refresh_it_once(
    oidc_provider: str, tmp_path: Path, storage_kind: str
) -> None:
    result = run_child(tmp_path, CHILD, str(IDP_DIR), oidc_provider, storage_kind, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["both"] == ["alice", "alice"]
    assert outcome["rotated"] is True
    # the grant survived the concurrent refresh: the stored refresh token still works
    assert "invalid_grant" not in result.stderr
    assert outcome["later"] == "alice", result.stderr
    assert outcome["refreshed_again"] is True
    assert outcome["stored_at_end"] is True
    assert outcome["same_lock"] is True  # one token, one lock, whatever the config dir
    assert outcome["lock_mode"] == "0o600"
    assert outcome["lock_dir_mode"] == "0o700"

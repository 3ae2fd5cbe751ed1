"""The checks on the real files of the machine running the tests, and through the loader.

The expectations are derived from the machine itself, independently of the plugin: a pass
needs evidence (a dm-crypt device, a SecureBoot byte of 1, a lockdown mode) that the test
finds on its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mcp_acp_linux_posture import DiskEncryptionCheck, KernelLockdownCheck, SecureBootCheck
from mcp_acp_linux_posture.sysfs import SECURE_BOOT_VARIABLE
from pydantic import ValidationError

from mcp_acp.models import PostureStatus
from mcp_acp.plugins import load_plugins
from mcp_acp.posture import run_check
from mcp_acp.registry import Kind, PluginContext

NAMES = ["linux-disk-encryption", "linux-secure-boot", "linux-kernel-lockdown"]
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads the real /sys")


@pytest.fixture
def context(tmp_path: Path) -> PluginContext:
    return PluginContext(tmp_path / "config.json", tmp_path)


def _crypt_devices() -> list[str]:
    found = []
    for uuid in Path("/sys/block").glob("dm-*/dm/uuid"):
        if uuid.read_text().startswith("CRYPT-"):
            found.append(uuid.parent.parent.name)
    return found


@linux_only
async def test_real_disk_encryption_is_consistent_with_this_machine() -> None:
    result = await run_check(DiskEncryptionCheck(("/",)), 10)
    if result.status is PostureStatus.PASS:
        assert _crypt_devices(), "a pass without any dm-crypt device on the machine"
        assert any(name in result.detail for name in _crypt_devices())
        return
    # not a pass: the detail names the device holding / (its major:minor, unless anonymous)
    assert result.detail.startswith("/ is on ")
    dev = os.stat("/").st_dev
    if os.major(dev) != 0:
        assert f"{os.major(dev)}:{os.minor(dev)}" in result.detail
    if not _crypt_devices():
        assert result.status in (PostureStatus.FAIL, PostureStatus.UNKNOWN)


@linux_only
async def test_real_secure_boot_is_consistent_with_this_machine() -> None:
    result = await run_check(SecureBootCheck(), 10)
    variable = Path("/sys/firmware/efi/efivars") / SECURE_BOOT_VARIABLE
    if not Path("/sys/firmware/efi").is_dir():
        assert (result.status, result.detail) == (
            PostureStatus.UNKNOWN,
            "not booted through UEFI (no /sys/firmware/efi)",
        )
    elif result.status is PostureStatus.PASS:
        assert variable.read_bytes()[4:] == b"\x01"


@linux_only
async def test_real_kernel_lockdown_is_consistent_with_this_machine() -> None:
    result = await run_check(KernelLockdownCheck(), 10)
    path = Path("/sys/kernel/security/lockdown")
    try:
        text = path.read_text()
    except OSError:
        assert result.status is PostureStatus.UNKNOWN
        return
    mode = next(w.strip("[]") for w in text.split() if w.startswith("["))
    assert f"'{mode}'" in result.detail
    assert (result.status is PostureStatus.PASS) == (mode in ("integrity", "confidentiality"))


@pytest.mark.parametrize("name", NAMES)
async def test_every_check_is_unknown_off_linux(name: str, context: PluginContext) -> None:
    registration = load_plugins({"linux-posture"}).registry.get(Kind.POSTURE_CHECK, name)
    assert registration is not None
    assert registration.plugin == "linux-posture"
    check = registration.factory(registration.config_model.model_validate({}), context)
    check.platform = "darwin"
    result = await check.check()
    assert (result.check, result.status) == (name, PostureStatus.UNKNOWN)
    assert result.detail == f"{name} is a Linux check and this host is 'darwin'"


def test_disk_encryption_defaults_to_root_and_home(context: PluginContext) -> None:
    registration = load_plugins({"linux-posture"}).registry.get(
        Kind.POSTURE_CHECK, "linux-disk-encryption"
    )
    assert registration is not None
    check = registration.factory(registration.config_model.model_validate({}), context)
    assert check.paths == tuple(dict.fromkeys(("/", str(Path.home()))))
    chosen = registration.factory(
        registration.config_model.model_validate({"paths": ["/srv"]}), context
    )
    assert chosen.paths == ("/srv",)


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("linux-disk-encryption", {"path": "/"}),
        ("linux-disk-encryption", {"paths": ["relative"]}),
        ("linux-disk-encryption", {"paths": []}),
        ("linux-secure-boot", {"strict": True}),
        ("linux-kernel-lockdown", {"minimum": "none"}),
        ("linux-kernel-lockdown", {"level": "integrity"}),
    ],
)
def test_options_are_validated(name: str, bad: dict[str, object]) -> None:
    registration = load_plugins({"linux-posture"}).registry.get(Kind.POSTURE_CHECK, name)
    assert registration is not None
    with pytest.raises(ValidationError):
        registration.config_model.model_validate(bad)


def test_every_check_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in NAMES:
        assert f"`{name}`" in readme

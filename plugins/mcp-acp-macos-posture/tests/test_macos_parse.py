"""The parsers on the text each tool prints, across macOS versions and states.

We cannot run macOS in CI. Each fixture is the tool's output as Apple documents it and as
Mac admins have published it (man pages, support articles, management scripts); the name
says which version and state it stands for. Trailing newlines are kept as the tools print
them.
"""

from __future__ import annotations

import pytest
from mcp_acp_macos_posture.parse import (
    parse_csrutil,
    parse_fdesetup,
    parse_socketfilterfw,
    parse_spctl,
)

from mcp_acp.models import PostureStatus

PASS, FAIL, UNKNOWN = PostureStatus.PASS, PostureStatus.FAIL, PostureStatus.UNKNOWN

FDESETUP = {
    # 10.13 to 15 (APFS): FileVault fully on
    "on": ("FileVault is On.\n", PASS),
    # any version: FileVault never enabled
    "off": ("FileVault is Off.\n", FAIL),
    # 10.10 to 12 (CoreStorage) and APFS on Intel without T2: first encryption pass running
    "encrypting": (
        "FileVault is On.\nEncryption in progress: Percent completed = 42.0\n",
        FAIL,
    ),
    # turning FileVault off: decryption running
    "decrypting": (
        "FileVault is Off.\nDecryption in progress: Percent completed = 87.3\n",
        FAIL,
    ),
    # fdesetup enable -defer: waiting for the user's next login
    "deferred": (
        "FileVault is Off.\nDeferred enablement appears to be active for user 'alice'.\n",
        FAIL,
    ),
    # 10.9-era wording after 'fdesetup enable' before the restart
    "pending-restart": ("FileVault is Off, but will be enabled after the next restart.\n", FAIL),
    # some future wording: unknown, not a pass
    "on-with-news": ("FileVault is On, but something new happened.\n", UNKNOWN),
    "not-a-mac": ("fdesetup: command not found\n", UNKNOWN),
    "empty": ("", UNKNOWN),
    # contradictory: the first answer used to decide (a pass)
    "on-then-off": ("FileVault is On.\nFileVault is Off.\n", UNKNOWN),
}


@pytest.mark.parametrize(("text", "expected"), FDESETUP.values(), ids=FDESETUP.keys())
def test_fdesetup(text: str, expected: PostureStatus) -> None:
    assert parse_fdesetup(text)[0] is expected


def test_fdesetup_detail_says_how_far_encryption_is() -> None:
    assert "42.0% done" in parse_fdesetup(FDESETUP["encrypting"][0])[1]
    assert "deferred" in parse_fdesetup(FDESETUP["deferred"][0])[1]


# 11 Big Sur and later print the protections of a custom configuration with tabs
BIG_SUR_CUSTOM = """\
System Integrity Protection status: unknown (Custom Configuration).

Configuration:
\tApple Internal: disabled
\tKext Signing: enabled
\tFilesystem Protections: disabled
\tDebugging Restrictions: enabled
\tDTrace Restrictions: enabled
\tNVRAM Protections: enabled
\tBaseSystem Verification: enabled
\tBoot-arg Restrictions: enabled
\tKernel Integrity Protections: enabled
\tAuthenticated Root Requirement: enabled

This is an unsupported configuration, likely to break in the future and leave your \
machine in an unknown state.
"""

# 10.11 El Capitan to 10.15 Catalina wording of a custom configuration (csr-active-config 0x63)
EL_CAPITAN_CUSTOM = """\
System Integrity Protection status: enabled (Custom Configuration).

Configuration:
Apple Internal: disabled
Kext Signing: disabled
Filesystem Protections: disabled
Debugging Restrictions: disabled
DTrace Restrictions: disabled
NVRAM Protections: disabled

This is an unsupported configuration, likely to break in the future and leave your \
machine in an unknown state.
"""

CSRUTIL = {
    # every version since 10.11: SIP fully on / fully off
    "enabled": ("System Integrity Protection status: enabled.\n", PASS),
    "disabled": ("System Integrity Protection status: disabled.\n", FAIL),
    "custom-big-sur": (BIG_SUR_CUSTOM, FAIL),
    "custom-el-capitan": (EL_CAPITAN_CUSTOM, FAIL),
    # 'unknown' without a configuration list: we cannot tell either
    "unknown": ("System Integrity Protection status: unknown.\n", UNKNOWN),
    "garbage": ("csrutil: failed to read the SIP configuration\n", UNKNOWN),
    "enabled-then-disabled": (
        "System Integrity Protection status: enabled.\n"
        "System Integrity Protection status: disabled.\n",
        UNKNOWN,
    ),
}


@pytest.mark.parametrize(("text", "expected"), CSRUTIL.values(), ids=CSRUTIL.keys())
def test_csrutil(text: str, expected: PostureStatus) -> None:
    assert parse_csrutil(text)[0] is expected


def test_csrutil_custom_configuration_names_what_is_off() -> None:
    detail = parse_csrutil(BIG_SUR_CUSTOM)[1]
    assert detail.endswith(": Filesystem Protections disabled")  # Apple Internal is ignored
    many = parse_csrutil(EL_CAPITAN_CUSTOM)[1]
    assert "Kext Signing, Filesystem Protections" in many


SPCTL = {
    # 10.5 onwards, printed on stdout (the runner also reads stderr)
    "enabled": ("assessments enabled\n", PASS),
    "disabled": ("assessments disabled\n", FAIL),
    # an extra line before the state (15 Sequoia's wording about confirming in System
    # Settings, printed by --global-disable) does not hide it
    "note-then-disabled": (
        "Globally disabling the assessment system needs to be confirmed in System Settings.\n"
        "assessments disabled\n",
        FAIL,
    ),
    "garbage": ("spctl: unrecognized option\n", UNKNOWN),
    "both": ("assessments enabled\nassessments disabled\n", UNKNOWN),
}


@pytest.mark.parametrize(("text", "expected"), SPCTL.values(), ids=SPCTL.keys())
def test_spctl(text: str, expected: PostureStatus) -> None:
    assert parse_spctl(text)[0] is expected


SOCKETFILTERFW = {
    # 10.6 to 15: global states 0 (off), 1 (on), 2 (on, block all incoming)
    "off": ("Firewall is disabled. (State = 0)\n", FAIL),
    "on": ("Firewall is enabled. (State = 1)\n", PASS),
    "block-all": (
        "Firewall is blocking all non-essential incoming connections. (State = 2)\n",
        PASS,
    ),
    "unknown-state": ("Firewall is confused. (State = 7)\n", UNKNOWN),
    "no-state": ("Firewall is enabled.\n", UNKNOWN),
    "empty": ("", UNKNOWN),
    "two-states": (
        "Firewall is enabled. (State = 1)\nFirewall is disabled. (State = 0)\n",
        UNKNOWN,
    ),
    # an Arabic-Indic one: int() reads it as 1, the tool never prints it
    "non-ascii-digit": ("Firewall is enabled. (State = \u0661)\n", UNKNOWN),
}


@pytest.mark.parametrize(("text", "expected"), SOCKETFILTERFW.values(), ids=SOCKETFILTERFW.keys())
def test_socketfilterfw(text: str, expected: PostureStatus) -> None:
    assert parse_socketfilterfw(text)[0] is expected


def test_socketfilterfw_require_block_all() -> None:
    status, detail = parse_socketfilterfw(SOCKETFILTERFW["on"][0], require_block_all=True)
    assert (status, "requires blocking all" in detail) == (FAIL, True)
    assert parse_socketfilterfw(SOCKETFILTERFW["block-all"][0], require_block_all=True)[0] is PASS

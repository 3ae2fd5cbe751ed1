"""mcp-acp plugin ``macos-posture``: FileVault, SIP, Gatekeeper and firewall checks.

Each check runs one Apple tool by absolute path (no shell, no PATH lookup, 5 s by
default) and parses its text in a pure function (:mod:`mcp_acp_macos_posture.parse`).
On any other operating system every check reports ``UNKNOWN``, never ``PASS``.
"""

from __future__ import annotations

from mcp_acp.hookspecs import hookimpl
from mcp_acp.registry import Register
from mcp_acp_macos_posture.checks import (
    CommandCheck,
    FileVaultConfig,
    FirewallConfig,
    GatekeeperConfig,
    SipConfig,
    filevault_check,
    firewall_check,
    gatekeeper_check,
    sip_check,
)

__version__ = "0.1.0"

__all__ = [
    "CommandCheck",
    "FileVaultConfig",
    "FirewallConfig",
    "GatekeeperConfig",
    "SipConfig",
    "register_posture_checks",
]


@hookimpl
def register_posture_checks(register: Register) -> None:
    register(
        "macos-filevault",
        filevault_check,
        FileVaultConfig,
        summary="FileVault is on and not mid-conversion (fdesetup status)",
    )
    register(
        "macos-sip",
        sip_check,
        SipConfig,
        summary="System Integrity Protection fully enabled (csrutil status)",
    )
    register(
        "macos-gatekeeper",
        gatekeeper_check,
        GatekeeperConfig,
        summary="Gatekeeper assessments enabled (spctl --status)",
    )
    register(
        "macos-firewall",
        firewall_check,
        FirewallConfig,
        summary="application firewall on (socketfilterfw --getglobalstate)",
    )

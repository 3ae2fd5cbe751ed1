"""mcp-acp plugin ``linux-posture``: disk encryption, Secure Boot and kernel lockdown.

The checks read /proc and /sys only — no subprocess, no root — and decide in pure
functions (:mod:`mcp_acp_linux_posture.sysfs`). On any other operating system every
check reports ``UNKNOWN``, never ``PASS``.
"""

from __future__ import annotations

from mcp_acp.hookspecs import hookimpl
from mcp_acp.registry import Register
from mcp_acp_linux_posture.checks import (
    DiskEncryptionCheck,
    DiskEncryptionConfig,
    KernelLockdownCheck,
    KernelLockdownConfig,
    SecureBootCheck,
    SecureBootConfig,
)

__version__ = "0.1.0"

__all__ = [
    "DiskEncryptionCheck",
    "DiskEncryptionConfig",
    "KernelLockdownCheck",
    "KernelLockdownConfig",
    "SecureBootCheck",
    "SecureBootConfig",
    "register_posture_checks",
]


@hookimpl
def register_posture_checks(register: Register) -> None:
    register(
        "linux-disk-encryption",
        DiskEncryptionCheck.from_config,
        DiskEncryptionConfig,
        summary="/ and $HOME on dm-crypt (LUKS), from mountinfo and /sys/block",
    )
    register(
        "linux-secure-boot",
        SecureBootCheck.from_config,
        SecureBootConfig,
        summary="UEFI Secure Boot on (SecureBoot EFI variable)",
    )
    register(
        "linux-kernel-lockdown",
        KernelLockdownCheck.from_config,
        KernelLockdownConfig,
        summary="kernel lockdown integrity or stricter (/sys/kernel/security/lockdown)",
    )

"""The three checks: options models and the classes that read the real host."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mcp_acp.models import PostureResult, PostureStatus
from mcp_acp.registry import PluginContext
from mcp_acp_linux_posture.sysfs import (
    Outcome,
    encryption_of,
    lockdown_of,
    resolve,
    secure_boot_of,
)

__all__ = [
    "DiskEncryptionCheck",
    "DiskEncryptionConfig",
    "KernelLockdownCheck",
    "KernelLockdownConfig",
    "SecureBootCheck",
    "SecureBootConfig",
]


class DiskEncryptionConfig(BaseModel):
    """Options of ``linux-disk-encryption``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    paths: tuple[Path, ...] | None = Field(
        default=None,
        description="Absolute paths whose file systems must be encrypted; default / and $HOME.",
    )

    @field_validator("paths")
    @classmethod
    def _absolute(cls, value: tuple[Path, ...] | None) -> tuple[Path, ...] | None:
        if value is not None and (not value or not all(p.is_absolute() for p in value)):
            raise ValueError("must be a non-empty list of absolute paths")
        return value


class SecureBootConfig(BaseModel):
    """Options of ``linux-secure-boot`` (none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KernelLockdownConfig(BaseModel):
    """Options of ``linux-kernel-lockdown``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    minimum: Literal["integrity", "confidentiality"] = Field(
        default="integrity", description="The weakest lockdown mode that passes."
    )


class _FileCheck:
    """Shared shape: refuse off Linux, read files in a thread, wrap the outcome."""

    name = ""

    def __init__(self, *, root: Path = Path("/"), platform: str = sys.platform) -> None:
        self.root = root
        self.platform = platform

    async def check(self) -> PostureResult:
        if self.platform != "linux":
            status, detail = (
                PostureStatus.UNKNOWN,
                f"{self.name} is a Linux check and this host is {self.platform!r}",
            )
        else:
            status, detail = await asyncio.to_thread(self.probe)
        return PostureResult(
            check=self.name, status=status, detail=detail, checked_at=datetime.now(UTC)
        )

    def probe(self) -> Outcome:
        raise NotImplementedError


class DiskEncryptionCheck(_FileCheck):
    """The file systems holding the given paths sit on dm-crypt."""

    name = "linux-disk-encryption"

    def __init__(
        self,
        paths: tuple[str, ...],
        *,
        root: Path = Path("/"),
        platform: str = sys.platform,
        device_of: Callable[[str], int] | None = None,
    ) -> None:
        super().__init__(root=root, platform=platform)
        self.paths = paths
        # the st_dev of a path: the real os.stat, or the tests' table for a fake tree
        self.device_of = device_of or (lambda path: os.stat(path).st_dev)

    @classmethod
    def from_config(
        cls, options: DiskEncryptionConfig, context: PluginContext
    ) -> DiskEncryptionCheck:
        paths = options.paths or (Path("/"), Path.home())
        return cls(tuple(dict.fromkeys(str(p) for p in paths)))

    def probe(self) -> Outcome:
        try:
            mountinfo = (self.root / "proc/self/mountinfo").read_text()
        except OSError as exc:
            return PostureStatus.UNKNOWN, f"cannot read /proc/self/mountinfo: {exc.strerror}"
        outcomes = [self._one(mountinfo, resolve(p, self.root)) for p in self.paths]
        statuses = {status for status, _ in outcomes}
        for worst in (PostureStatus.FAIL, PostureStatus.UNKNOWN):
            if worst in statuses:
                return worst, "; ".join(d for s, d in outcomes if s is not PostureStatus.PASS)
        return PostureStatus.PASS, "; ".join(d for _, d in outcomes)

    def _one(self, mountinfo: str, path: str) -> Outcome:
        try:
            dev = self.device_of(path)
        except OSError as exc:
            return PostureStatus.UNKNOWN, f"cannot stat {path}: {exc.strerror}"
        return encryption_of(self.root, mountinfo, path, dev)


class SecureBootCheck(_FileCheck):
    """The firmware booted with UEFI Secure Boot on."""

    name = "linux-secure-boot"

    @classmethod
    def from_config(cls, options: SecureBootConfig, context: PluginContext) -> SecureBootCheck:
        return cls()

    def probe(self) -> Outcome:
        return secure_boot_of(self.root)


class KernelLockdownCheck(_FileCheck):
    """The kernel runs in lockdown mode ``integrity`` or stricter."""

    name = "linux-kernel-lockdown"

    def __init__(
        self, minimum: str = "integrity", *, root: Path = Path("/"), platform: str = sys.platform
    ) -> None:
        super().__init__(root=root, platform=platform)
        self.minimum = minimum

    @classmethod
    def from_config(
        cls, options: KernelLockdownConfig, context: PluginContext
    ) -> KernelLockdownCheck:
        return cls(options.minimum)

    def probe(self) -> Outcome:
        return lockdown_of(self.root, self.minimum)

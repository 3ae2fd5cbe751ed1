"""The four checks: each runs one tool by absolute path and hands its text to a parser."""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from mcp_acp.models import PostureResult, PostureStatus
from mcp_acp.registry import PluginContext
from mcp_acp_macos_posture.parse import (
    Outcome,
    parse_csrutil,
    parse_fdesetup,
    parse_socketfilterfw,
    parse_spctl,
)
from mcp_acp_macos_posture.run import Completed, run_command

__all__ = [
    "CommandCheck",
    "FileVaultConfig",
    "FirewallConfig",
    "GatekeeperConfig",
    "SipConfig",
    "filevault_check",
    "firewall_check",
    "gatekeeper_check",
    "sip_check",
]

FDESETUP = ("/usr/bin/fdesetup", "status")
CSRUTIL = ("/usr/bin/csrutil", "status")
SPCTL = ("/usr/sbin/spctl", "--status")
SOCKETFILTERFW = ("/usr/libexec/ApplicationFirewall/socketfilterfw", "--getglobalstate")

Runner = Callable[[Sequence[str], float], Awaitable[Completed | str]]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="How long the tool may take before 'unknown'."
    )


class FileVaultConfig(_Options):
    """Options of ``macos-filevault``."""


class SipConfig(_Options):
    """Options of ``macos-sip``."""


class GatekeeperConfig(_Options):
    """Options of ``macos-gatekeeper``."""


class FirewallConfig(_Options):
    """Options of ``macos-firewall``."""

    require_block_all: bool = Field(
        default=False, description="Pass only in 'block all incoming connections' mode."
    )


class CommandCheck:
    """A :class:`mcp_acp.protocols.PostureCheck` backed by one macOS command."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        parse: Callable[[str], Outcome],
        *,
        timeout: float = 5.0,
        platform: str = sys.platform,
        run: Runner = run_command,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.parse = parse
        self.timeout = timeout
        self.platform = platform
        self.run = run

    async def check(self) -> PostureResult:
        status, detail = await self._probe()
        return PostureResult(
            check=self.name, status=status, detail=detail, checked_at=datetime.now(UTC)
        )

    async def _probe(self) -> Outcome:
        if self.platform != "darwin":
            return (
                PostureStatus.UNKNOWN,
                f"{self.name} is a macOS check and this host is {self.platform!r}",
            )
        outcome = await self.run(self.argv, self.timeout)
        if isinstance(outcome, str):
            return PostureStatus.UNKNOWN, outcome
        return self.parse(outcome.text)


def filevault_check(options: FileVaultConfig, context: PluginContext) -> CommandCheck:
    return CommandCheck(
        "macos-filevault", FDESETUP, parse_fdesetup, timeout=options.timeout_seconds
    )


def sip_check(options: SipConfig, context: PluginContext) -> CommandCheck:
    return CommandCheck("macos-sip", CSRUTIL, parse_csrutil, timeout=options.timeout_seconds)


def gatekeeper_check(options: GatekeeperConfig, context: PluginContext) -> CommandCheck:
    return CommandCheck("macos-gatekeeper", SPCTL, parse_spctl, timeout=options.timeout_seconds)


def firewall_check(options: FirewallConfig, context: PluginContext) -> CommandCheck:
    parse = functools.partial(parse_socketfilterfw, require_block_all=options.require_block_all)
    return CommandCheck("macos-firewall", SOCKETFILTERFW, parse, timeout=options.timeout_seconds)

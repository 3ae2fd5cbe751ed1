"""An example mcp-acp plugin: the ``marker-file`` posture check and a CLI command.

Read top to bottom, this module is everything a plugin needs: an options model, an
implementation of a protocol from :mod:`mcp_acp.protocols`, and hook implementations that
register both. See docs/plugins.md in the mcp-acp repository for the walk-through.
"""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import click
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import PostureResult, PostureStatus
from mcp_acp.registry import PluginContext, Register

__version__ = "0.1.0"


class MarkerFileConfig(BaseModel):
    """Options of the ``marker-file`` check (the ``config`` object in the config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Field(description="The marker file; relative: from the config file's directory.")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value


def inspect_marker(path: Path, *, uid: int | None = None) -> tuple[PostureStatus, str]:
    """Decide the check's outcome from the file system. Pure apart from one ``lstat``."""
    uid = os.geteuid() if uid is None else uid
    try:
        info = path.lstat()
    except FileNotFoundError:
        return PostureStatus.FAIL, f"{path} does not exist"
    except OSError as exc:  # e.g. EACCES on a parent directory: we cannot tell
        return PostureStatus.UNKNOWN, f"cannot inspect {path}: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return PostureStatus.FAIL, f"{path} is not a regular file"
    if info.st_uid not in (0, uid):
        return PostureStatus.FAIL, f"{path} is owned by uid {info.st_uid}"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return PostureStatus.FAIL, f"{path} is writable by group or others"
    return PostureStatus.PASS, f"{path} present"


class MarkerFileCheck:
    """A :class:`mcp_acp.protocols.PostureCheck`: the device is healthy while the marker is."""

    name = "marker-file"

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def from_config(cls, options: MarkerFileConfig, context: PluginContext) -> MarkerFileCheck:
        return cls(options.path)

    async def check(self) -> PostureResult:
        status, detail = await asyncio.to_thread(inspect_marker, self.path)
        return PostureResult(
            check=self.name, status=status, detail=detail, checked_at=datetime.now(UTC)
        )


@hookimpl
def register_posture_checks(register: Register) -> None:
    register(
        "marker-file",
        MarkerFileCheck.from_config,
        MarkerFileConfig,
        summary="passes while a root- or user-owned marker file exists",
    )


@click.command("marker-file")
@click.argument("path", type=click.Path(path_type=Path))
def marker_file_command(path: Path) -> None:
    """Run the marker-file posture check once on PATH (exit 1 unless it passes)."""
    options = MarkerFileConfig(path=path.absolute())
    result = asyncio.run(MarkerFileCheck(options.path).check())
    click.echo(f"{result.check}: {result.status.value} — {result.detail}")
    if not result.passed:
        raise SystemExit(1)


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(marker_file_command)

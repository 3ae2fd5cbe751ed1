"""A well-behaved plugin: one identity provider with options, and one command."""

from __future__ import annotations

import click
from pydantic import BaseModel, ConfigDict

from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import Provenance, Subject
from mcp_acp.registry import PluginContext, Register


class FixedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject_id: str
    max_age_seconds: int = 60


class FixedIdentity:
    def __init__(self, subject_id: str) -> None:
        self.subject_id = subject_id

    async def current_subject(self) -> Subject:
        return Subject(subject_id=self.subject_id, provenance=Provenance.CONFIG)


def build(options: FixedConfig, context: PluginContext) -> FixedIdentity:
    return FixedIdentity(options.subject_id)


@hookimpl
def register_identity_providers(register: Register) -> None:
    register("fixed", build, FixedConfig, summary="a fixed subject")


@click.command("hello")
def hello() -> None:
    click.echo("hello from fixture-good")


@hookimpl
def register_commands(cli: click.Group) -> None:
    cli.add_command(hello)

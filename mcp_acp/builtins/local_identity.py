"""Built-in ``local`` identity provider: the OS user running the proxy.

This is *not* Zero Trust — nothing is verified beyond the process's own user id — so it is
meant for demos and single-user setups, and it says so in the log when it is built. Its
subject carries ``Provenance.CONFIG`` (the operator chose it), never ``TOKEN``: a rule that
requires a token-verified subject will not match it.
"""

from __future__ import annotations

import logging
import os
import pwd

from pydantic import BaseModel, ConfigDict, Field

from mcp_acp.hookspecs import hookimpl
from mcp_acp.models import Provenance, Subject
from mcp_acp.registry import PluginContext, Register

log = logging.getLogger(__name__)


class LocalIdentityConfig(BaseModel):
    """Options of the ``local`` identity provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Subject id to report instead of the OS user name.",
    )


class LocalIdentityProvider:
    """Reports one fixed subject: the configured id, or the OS user name."""

    def __init__(self, subject_id: str) -> None:
        self._subject = Subject(subject_id=subject_id, provenance=Provenance.CONFIG)

    @classmethod
    def from_config(
        cls, options: LocalIdentityConfig, context: PluginContext
    ) -> LocalIdentityProvider:
        if options.subject_id is None:
            log.warning("identity 'local': the subject is the OS user, not a verified identity")
            return cls(os_user())
        log.warning(
            "identity 'local': the subject is %r, as the config's subject_id says, not a "
            "verified identity",
            options.subject_id,
        )
        return cls(options.subject_id)

    async def current_subject(self) -> Subject:
        return self._subject


def os_user() -> str:
    """The name of the user the process runs as (its effective uid), from the system's user
    database — not ``getpass.getuser()``, which believes ``LOGNAME`` and ``USER`` first, and
    so whoever started the proxy; ``uid N`` for a uid with no name."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


@hookimpl
def register_identity_providers(register: Register) -> None:
    register(
        "local",
        LocalIdentityProvider.from_config,
        LocalIdentityConfig,
        summary="the OS user (demos; not Zero Trust)",
    )

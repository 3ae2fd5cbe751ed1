"""``mcp-acp status`` and ``mcp-acp approvals list | show ID | approve ID [--remember] |
deny ID``: commands that talk to running proxies over their control sockets
(:mod:`mcp_acp.control`).

What a socket answers is not trusted: a tool name in an approval's summary is chosen by
the client (a model), so every value is escaped before it reaches the terminal (an ANSI
or OSC sequence would otherwise rewrite the line a human approves from), and a missing or
mistyped field prints as ``?`` instead of ending the command.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from mcp_acp.config import entry_exists, load_config, resolve_config_path
from mcp_acp.control import NoAnswer, ask, ended_approval, runtime_dir, sockets
from mcp_acp.errors import McpAcpError, printable

__all__ = ["approvals_group", "status_command"]

_dir_option = click.option(
    "--socket-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where proxies put their control sockets (default: the config's proxy.socket_dir, "
    "else the runtime dir).",
)


def _text(value: Any) -> str:
    """A value from a socket as it may reach a terminal: every non-printable character
    escaped (``\\x1b``), ``?`` for a missing one."""
    return "?" if value is None else printable(value if isinstance(value, str) else str(value))


def _number(value: Any, spec: str) -> str:
    """A number from a socket formatted with ``spec``; anything else as :func:`_text`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    return _text(value)


def _socket_dir(given: Path | None) -> Path | None:
    """Where the proxies serve their sockets: ``--socket-dir`` if given, else the config's
    ``proxy.socket_dir`` (the config ``run`` reads: ``--config``, ``MCP_ACP_CONFIG`` or the
    default) if it sets one, else ``None`` — the runtime dir. A config that exists but cannot
    be read is a ``ConfigError``: guessing another directory would leave every approval to
    time out unanswered."""
    if given is not None:
        return given
    path = resolve_config_path(click.get_current_context().find_root().params.get("config"))
    if not entry_exists(path):
        return None
    return load_config(path).proxy.socket_dir


def _each(
    socket_dir: Path | None, command: dict[str, Any]
) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Each running proxy's answer to ``command``, and the proxies that did not answer (a
    line each: ``pid 4242 (timed out)``). A socket nobody listens on is a proxy that has
    gone away: it has nothing to say, and is not named."""
    answers, silent = [], []
    for path in sockets(_socket_dir(socket_dir)):
        try:
            answer = ask(path, command)
            refused = _refused(answer)
            if refused is not None:  # it will not answer this process: not "nothing"
                raise McpAcpError(f"proxy pid {_pid(path)} refused: {refused}")
            answers.append((path, answer))
        except (ConnectionRefusedError, FileNotFoundError):
            continue  # a proxy that has gone away leaves its socket behind
        except OSError as exc:  # it is there, and did not answer: stuck, or overwhelmed
            silent.append(f"pid {_pid(path)} ({printable(str(exc))})")
        except (ValueError, RecursionError):
            silent.append(f"pid {_pid(path)} (its answer is not JSON)")
    return answers, silent


def _refused(answer: Mapping[str, Any]) -> str | None:
    """The proxy's refusal to answer this process at all (another user; the backend's own
    session), or None."""
    error = answer.get("error")
    return _text(error) if isinstance(error, str) and error.startswith("not allowed:") else None


def _unanswered(silent: list[str], what: str) -> None:
    """After what the proxies that answered said: a proxy that did not is an error (exit
    1), so that nothing is claimed of it — "no pending approvals" is never said while
    one may be waiting unseen."""
    if silent:
        raise McpAcpError(
            f"no answer from proxy {', '.join(silent)}: its {what}, if any, not shown",
            fix="run the command again; if the proxy stays silent, look at its stderr",
        )


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_dir_option
def status_command(as_json: bool, socket_dir: Path | None) -> None:
    """Show every running proxy of this user: session, subject, backend, policy, counts."""
    answers, silent = _each(socket_dir, {"op": "status"})
    found = [answer for _, answer in answers if "pid" in answer]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        _unanswered(silent, "status")
        return
    if not found and not silent:
        click.echo("no running proxy")
        return
    for item in found:
        counts = item.get("requests")
        counts = counts if isinstance(counts, dict) else {}
        click.echo(
            f"pid {_text(item.get('pid'))}  up {_number(item.get('uptime_seconds'), '.0f')}s  "
            f"subject {_text(item.get('subject'))}  backend {_text(item.get('backend'))}\n"
            f"  session {_text(item.get('session_id'))}  policy {_text(item.get('policy_id'))}\n"
            f"  requests: {_text(counts.get('allowed', 0))} allowed, "
            f"{_text(counts.get('denied', 0))} denied, {_text(counts.get('asked', 0))} asked; "
            f"pending approvals {_text(item.get('pending_approvals'))}, "
            f"remembered approvals {_text(item.get('remembered_approvals'))}"
        )
    _unanswered(silent, "status")


@click.group("approvals")
def approvals_group() -> None:
    """Answer requests that a policy rule sent to a human (the 'cli' approver)."""


@approvals_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_dir_option
def list_command(as_json: bool, socket_dir: Path | None) -> None:
    """Show every pending approval of every running proxy."""
    pending: list[dict[str, Any]] = []
    answers, silent = _each(socket_dir, {"op": "list"})
    for _, answer in answers:
        items = answer.get("pending")
        pending += (
            [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
        )
    if as_json:
        click.echo(json.dumps(pending, indent=2))
    elif not pending and not silent:
        click.echo("no pending approvals")
    for item in [] if as_json else pending:
        click.echo(approval_line(item))
    _unanswered(silent, "pending approvals")


def approval_line(item: Mapping[str, Any]) -> str:
    """One pending approval as ``approvals list`` prints it: the id, the seconds left
    before the request is denied unanswered, and what is asked."""
    never = item.get("not_remembered") or "never remembered"
    cache = "" if item.get("cacheable") is True else f"  ({_text(never)})"
    expires = _number(item.get("expires_in"), ".0f")
    return f"{_text(item.get('id'))}  expires in {expires}s  {_text(item.get('summary'))}{cache}"


@approvals_group.command("show")
@click.argument("approval_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_dir_option
def show_command(approval_id: str, as_json: bool, socket_dir: Path | None) -> None:
    """Show one pending approval with its arguments whole (list leaves out large ones)."""
    directory = _socket_dir(socket_dir) or runtime_dir()
    answers, silent = _each(directory, {"op": "show", "id": approval_id})
    for path, answer in answers:
        item = answer.get("pending")
        if isinstance(item, dict):
            click.echo(json.dumps(item, indent=2) if as_json else _approval_text(item))
            return
        if isinstance(answer.get("ended"), dict):  # this proxy held it; it has ended
            _ended(approval_id, _pid(path), answer["ended"], ours=False, live=True)
    ended = ended_approval(directory, approval_id)
    if ended is not None:  # a proxy that has ended held it
        _ended(approval_id, *ended, ours=False)
    _unanswered(silent, f"approval {_text(approval_id)}")
    raise McpAcpError(
        f"no pending approval {approval_id!r} in any running proxy",
        fix="run 'mcp-acp approvals list'; it may have timed out",
    )


def _approval_text(item: Mapping[str, Any]) -> str:
    """One pending approval as ``approvals show`` prints it: the line ``list`` prints, then
    each field on a line of its own and the arguments as indented JSON — every value
    escaped as ``list`` escapes it (:func:`_text`)."""
    lines = [approval_line(item)]
    for key in ("rule", "subject", "method", "tool", "name", "uri"):
        lines.append(f"  {key}: {_text(item.get(key))}")
    paths = item.get("paths")
    for path in paths if isinstance(paths, list) else []:
        lines.append(f"  path: {_text(path)}")
    arguments = json.dumps(item.get("arguments"), indent=2, ensure_ascii=False, default=str)
    lines.append("  arguments:")
    # split at "\n" only, which JSON strings never hold raw: splitlines() would also
    # break at a U+2028 in a value, and show it as a line break instead of escaped
    lines += [f"    {_text(line)}" for line in arguments.split("\n")]
    return "\n".join(lines)


def _answer(op: str, approval_id: str, socket_dir: Path | None, remember: bool = False) -> None:
    """Send the answer; print what was sent and, as the proxy tells it once it has decided
    the request and forwarded it or refused it, what became of it — a policy reloaded while
    the request waited decides again, so an approval may still end in a denial, or pass
    without being remembered; an audit trail that fails meanwhile denies it.

    The approval has ended (answered, timed out, cancelled, cut short): if the running
    proxy that held it remembers it, or a proxy that has ended noted it
    (:func:`~mcp_acp.control.ended_approval`), say what became of it — exit 1, unless this
    very answer was taken by that proxy, which ended before it could reply."""
    directory = _socket_dir(socket_dir) or runtime_dir()
    command = {"op": op, "id": approval_id, "remember": remember}
    cut: list[int] = []  # proxies that took the command and closed without answering
    for path in sockets(directory):
        try:
            answer = ask(path, command)
        except NoAnswer:
            cut.append(_pid(path))
            continue
        except OSError:
            continue  # a proxy that has gone away leaves its socket behind
        except (ValueError, RecursionError):
            continue  # not an answer a proxy gives: nothing to show of it
        refused = _refused(answer)
        if refused is not None:  # it will not take an answer from this process at all
            raise McpAcpError(f"proxy pid {_pid(path)} refused: {refused}")
        if answer.get("ok"):
            click.echo(_outcome_line(approval_id, answer.get("result"), answer))
            return
        if isinstance(answer.get("ended"), dict):  # this proxy held it; it has ended
            _ended(approval_id, _pid(path), answer["ended"], ours=False, live=True)
    ended = ended_approval(directory, approval_id)
    if ended is not None:
        _ended(approval_id, *ended, ours=ended[0] in cut)
        return
    pids = ", ".join(map(str, cut))
    silent = f"; proxy pid {pids} took the answer but did not reply (it may have ended)"
    silent = silent if cut else ""
    raise McpAcpError(
        f"no pending approval {approval_id!r} in any running proxy{silent}",
        fix="run 'mcp-acp approvals list'; it may have timed out",
    )


def _outcome_line(approval_id: str, result: Any, answer: Mapping[str, Any]) -> str:
    """What was sent (``result``) and, if the proxy said, what became of the request."""
    line = f"{_text(approval_id)}: {_text(result)}"
    if "outcome" in answer:
        outcome = answer["outcome"]
        line += (
            f"; the proxy: {_text(outcome)}"
            if outcome is not None
            else "; sent — the proxy has not said yet what became of the request "
            "(it decides again if its policy changed meanwhile)"
        )
    return line


def _ended(
    approval_id: str, pid: int, entry: Mapping[str, Any], *, ours: bool, live: bool = False
) -> None:
    """An approval that has ended (``entry``: from the note of a proxy that has ended, or
    from the running proxy that held it if ``live``): what became of it. Printed as the
    answer if ``ours`` — the proxy took this command, then ended before it could reply;
    otherwise an error (exit 1): this answer came too late."""
    answer = entry.get("answer")
    if answer is not None and ours:
        click.echo(_outcome_line(approval_id, answer, {"outcome": entry.get("outcome")}))
        return
    named = _text(approval_id)
    outcome = (
        _text(entry["outcome"])
        if entry.get("outcome") is not None
        else "it has not said yet what became of the request"
    )
    if answer is None:
        raise McpAcpError(f"approval {named} ended unanswered: {outcome} (proxy pid {pid})")
    by = f" by {_text(entry.get('by'))}" if entry.get("by") else ""
    if live:
        raise McpAcpError(
            f"approval {named} was already answered ({_text(answer)}{by}); the proxy: "
            f"{outcome} (proxy pid {pid})"
        )
    raise McpAcpError(
        f"approval {named} was answered ({_text(answer)}{by}) before its proxy ended "
        f"(pid {pid}); the proxy: {outcome}"
    )


def _pid(path: Path) -> int:
    """The pid in a socket's name, ``proxy-<pid>.sock`` (-1 if it holds none)."""
    digits = path.name.removeprefix("proxy-").removesuffix(".sock")
    return int(digits) if digits.isdigit() else -1


@approvals_group.command("approve")
@click.argument("approval_id")
@click.option(
    "--remember",
    is_flag=True,
    help="Also allow the same call again (same tool, paths and arguments) for this subject "
    "until the cache expires (proxy.approval_cache_seconds). Ignored for code-executing tools.",
)
@_dir_option
def approve(approval_id: str, remember: bool, socket_dir: Path | None) -> None:
    """Allow a pending request (once, unless --remember)."""
    _answer("approve", approval_id, socket_dir, remember)


@approvals_group.command("deny")
@click.argument("approval_id")
@_dir_option
def deny(approval_id: str, socket_dir: Path | None) -> None:
    """Deny a pending request."""
    _answer("deny", approval_id, socket_dir)

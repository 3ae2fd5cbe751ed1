"""What a backend's lists may show, and which listed entries may be used.

The relay hands every ``tools/list``, ``resources/list``, ``resources/templates/list`` and
``prompts/list`` result to :meth:`ListGuard.filter`, and asks :meth:`ListGuard.withheld`
before deciding a request that uses one entry (a tool's call, a resource's read, a
prompt's get). The guard keeps, per session, what the backend's last lists said:

* each tool's annotations (they may only raise the risk the policy sees) and, for a strict
  input schema (``additionalProperties: false``), the argument names it allows;
* entries quarantined: defined with hidden-instruction markers
  (:mod:`mcp_acp.proxy.screening`), or listed twice with different definitions — not
  listed, their uses denied until a list defines them cleanly;
* with tool pins (:mod:`mcp_acp.proxy.pins`): tools whose definition changed since they
  were pinned, and with ``proxy.new_tools: review`` tools never approved — not listed,
  their calls denied until ``mcp-acp tools approve``.

An entry that passes is listed only if the policy could allow using it (a tool the subject
may never call is not listed). Newly held entries are recorded (``tool_quarantined``,
``tool_definition_changed``, ``tools_pinned``, …) as system records handed to the trail.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from mcp_acp.audit.events import SystemEvent, payload_digest
from mcp_acp.audit.trail import AuditTrail
from mcp_acp.errors import AuditError, ConfigError, McpAcpError
from mcp_acp.proxy.pep import EnforcementPoint, contained
from mcp_acp.proxy.pins import ToolPins, backend_ref
from mcp_acp.proxy.screening import screen_entry

__all__ = ["LISTS", "MAX_ANNOTATED_TOOLS", "ListGuard"]

log = logging.getLogger(__name__)

#: Tools whose annotations (from the backend's ``tools/list``) are remembered per session;
#: also how many quarantined entries of each kind (tools, resources, templates, prompts).
MAX_ANNOTATED_TOOLS = 10_000
#: List methods whose results are filtered, and how to ask about each item.
LISTS: dict[str, tuple[str, str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "tools/list": ("tools", "tools/call", lambda t: {"name": t.get("name"), "arguments": {}}),
    "resources/list": ("resources", "resources/read", lambda r: {"uri": r.get("uri")}),
    # a template is listed when reading a URI equal to its text would not be denied
    "resources/templates/list": (
        "resourceTemplates",
        "resources/read",
        lambda r: {"uri": r.get("uriTemplate")},
    ),
    "prompts/list": ("prompts", "prompts/get", lambda p: {"name": p.get("name")}),
}


class _Kind(NamedTuple):
    """One kind of list entry, as the quarantine treats it."""

    noun: str  # in log lines and denial reasons
    key: str  # the field naming an entry (and the request parameter that names it)
    event: str  # the system record of a newly quarantined definition
    detail: str  # where that record's detail names the entry


#: The kinds of list entry, by their key in the list result.
_KINDS: dict[str, _Kind] = {
    "tools": _Kind("tool", "name", "tool_quarantined", "tool"),
    "resources": _Kind("resource", "uri", "resource_quarantined", "uri"),
    "resourceTemplates": _Kind(
        "resource template", "uriTemplate", "resource_template_quarantined", "uriTemplate"
    ),
    "prompts": _Kind("prompt", "name", "prompt_quarantined", "prompt"),
}
#: Requests using one list entry, denied while it is quarantined: the entry's kind and the
#: rule of the denial. (A resource template has none: a URI made from one is decided by
#: the policy like any other.)
_USES: dict[str, tuple[str, str]] = {
    "tools/call": ("tools", "builtin-tool-quarantined"),
    "resources/read": ("resources", "builtin-resource-quarantined"),
    "prompts/get": ("prompts", "builtin-prompt-quarantined"),
}


class ListGuard:
    """The lists' side of one session (see the module docstring)."""

    def __init__(
        self,
        pep: EnforcementPoint,
        trail: AuditTrail,
        *,
        tool_screening: str = "quarantine",
        pins: ToolPins | None = None,
        pins_backend: str = "",
        review_new_tools: bool = False,
    ) -> None:
        self.pep = pep
        self.trail = trail
        self.tool_screening = tool_screening
        self.pins = pins  # None: tool definitions are not pinned
        self.pins_backend = pins_backend  # whose pins (pins.backend_key)
        # how records name it: a command line may carry a credential (a token argument)
        self._backend_ref = backend_ref(pins_backend)
        #: proxy.new_tools "review": a tool is callable only once this session's lists have
        #: shown it approved (pinned by 'mcp-acp tools approve'); needs pins
        self.review_new_tools = review_new_tools and pins is not None
        # tool name -> its annotations in the backend's last tools/list: they can only raise
        # the risk the policy sees (registry.facts), so a call is decided with them too
        self._annotations: dict[str, dict[str, Any]] = {}
        # every tool name the backend listed (at most MAX_ANNOTATED_TOOLS), and by its name
        # case-folded: a call of a listed tool by another spelling of its name is denied —
        # the policy folds case, pins and quarantine do not, and a backend that looks its
        # tools up ignoring case would run the held tool
        self._listed: set[str] = set()
        self._listed_folded: dict[str, str] = {}
        # tool name -> the argument names its last listed inputSchema allows, for tools whose
        # schema allows no others (additionalProperties: false): a call with any other
        # argument is denied (builtin-unexpected-arguments)
        self._strict: dict[str, frozenset[str]] = {}
        # kind (a key of _KINDS) -> entry name (tool and prompt name, resource URI, URI
        # template) -> (digest of its definition, why) for entries the backend's last list
        # defined with hidden-instruction markers (mcp_acp.proxy.screening): not listed, and
        # the requests using them denied
        self._quarantined: dict[str, dict[str, tuple[str, str]]] = {key: {} for key in _KINDS}
        # of those, the names quarantined for being listed twice with different definitions
        # (lifted by a list that names them once, whatever the screening setting)
        self._twice: dict[str, set[str]] = {key: set() for key in _KINDS}
        # tool name -> (digest of its new definition, the fields that changed) for tools
        # whose definition differs from their pin: not listed, calls denied until approved
        self._changed: dict[str, tuple[str, str]] = {}
        # with review_new_tools: tool name -> digest of its definition, for tools never
        # approved (not listed, calls denied); and the tools this session's lists showed
        # approved — the only ones callable
        self._unreviewed: dict[str, str] = {}
        self._reviewed: set[str] = set()

    def annotations(self, tool: str) -> dict[str, Any] | None:
        """``tool``'s annotations as the backend last listed them (they may only raise the
        risk the policy sees), if it listed any."""
        return self._annotations.get(tool)

    async def filter(self, method: str, result: dict[str, Any]) -> dict[str, Any]:
        """``result`` of the list ``method`` with what the client may see: each entry
        screened (:meth:`_screen`), then kept if it has a name (a URI, a URI template) and
        the policy could allow using it."""
        key, ask_method, params_of = LISTS[method]
        items = result.get(key)
        if not isinstance(items, list):
            return result
        items = await self._screen(key, [item for item in items if isinstance(item, dict)])
        named_by = _KINDS[key].key
        kept = []
        for item in items:
            if not isinstance(item.get(named_by), str):
                continue  # nothing could use it by name (a tools/call without one is denied)
            try:
                request = await self.pep.build(
                    ask_method,
                    params_of(item),
                    "list",
                    item.get("annotations") if key == "tools" else None,
                )
            except AuditError:
                raise  # the trail is failing: the answer is an error, the session ends
            except McpAcpError as error:  # no identity, or a binding violation: list nothing
                log.error("list filtering failed: %s", error)
                return {**result, key: []}
            could_allow = getattr(self.pep.engine, "could_allow", None)
            try:
                try:
                    if key in ("resources", "resourceTemplates") or could_allow is None:  # URI
                        visible = self.pep.engine.decide(request).effect.value != "deny"
                    else:
                        visible = _answer(could_allow(request))
                except BaseException as raised:  # sys.exit() in a plugin is its failure too
                    raise contained(raised) from raised
            except Exception as exc:  # engines should be total; fail closed: not listed
                log.error("policy engine raised while filtering %s: %r", method, exc)
                visible = False
            if visible:
                kept.append(item)
        return {**result, key: kept}

    def withheld(self, method: str, params: dict[str, Any]) -> tuple[str, str] | None:
        """Why a request using one listed entry is denied whatever the policy says (rule id,
        reason), if it is: the entry's definition was quarantined, or (a tool's) differs
        from its pin, or was never approved (``proxy.new_tools: review``); or a call names
        a listed tool in another letter case (``builtin-tool-miscased``)."""
        if method not in _USES:
            return None
        key, rule_id = _USES[method]
        kind = _KINDS[key]
        name = params.get(kind.key)
        if not isinstance(name, str):
            return None
        if method == "tools/call" and name not in self._listed:
            listed = self._listed_folded.get(name.casefold())
            if listed is not None:
                return (
                    "builtin-tool-miscased",
                    f"no tool of this name was listed, but {listed!r} was: call it by its "
                    "listed name (what holds that tool must hold any spelling of it)",
                )
        held = self._quarantined[key].get(name)
        if held is not None:
            return (
                rule_id,
                f"the backend defined this {kind.noun} with hidden-instruction markers "
                f"({held[1]}); it stays quarantined until the backend lists it without",
            )
        if method == "tools/call" and name in self._strict:
            arguments = params.get("arguments")
            if isinstance(arguments, dict) and (
                unexpected := sorted(k for k in arguments if k not in self._strict[name])
            ):
                return (
                    "builtin-unexpected-arguments",
                    f"the arguments {', '.join(map(repr, unexpected))} are not in this tool's "
                    "input schema, which allows no others (additionalProperties: false)",
                )
        if method == "tools/call" and name in self._changed:
            return (
                "builtin-tool-changed",
                f"the backend changed this tool's definition ({self._changed[name][1]}) since "
                f"it was pinned; approve it with 'mcp-acp tools approve {name}'",
            )
        if method == "tools/call" and self.review_new_tools and name not in self._reviewed:
            if name in self._unreviewed:
                why = f"approve it with 'mcp-acp tools approve {name}'"
            else:
                why = "no tools/list of this session showed it approved"
            return (
                "builtin-tool-unreviewed",
                f"new tools wait for review (proxy.new_tools is 'review'): {why}",
            )
        return None

    async def _screen(self, key: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The entries of one list (``key`` in its result) that may go on to the policy: a
        tool's annotations remembered; the poisoned entries quarantined
        (:meth:`_quarantine`), then the other tools compared with their pins
        (:meth:`_pin`)."""
        if key == "tools":
            for tool in items:
                self._remember_annotations(tool)
        items = self._one_each(key, items)
        if self.tool_screening == "quarantine":
            items = [item for item in items if not self._quarantine(key, item)]
        if key == "tools" and self.pins is not None:
            items = await self._pin(items)
        return items

    async def _pin(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Pin the tools seen for the first time (one ``tools_pinned`` record); hold back
        those whose definition differs from their pin, until approved (a
        ``tool_definition_changed`` record per new definition in this session). If the
        pins cannot be read, nothing is listed."""
        assert self.pins is not None  # noqa: S101 - only called with pins
        try:
            see = functools.partial(self.pins.see, review=self.review_new_tools)
            seen = await asyncio.to_thread(see, self.pins_backend, tools)
        except (ConfigError, OSError) as error:
            log.error("tool pins unusable; listing no tools: %s", error)
            return []
        kept, pinned, waiting = [], [], []
        for tool in tools:
            name = tool.get("name")
            state = seen.get(name) if isinstance(name, str) else None
            if state is not None and state.state == "unreviewed":
                assert isinstance(name, str)  # noqa: S101 - seen is keyed by name
                self._reviewed.discard(name)
                if self._unreviewed.get(name) != state.digest:
                    if name in self._unreviewed or len(self._unreviewed) < MAX_ANNOTATED_TOOLS:
                        self._unreviewed[name] = state.digest
                    waiting.append({"tool": name, "definition_sha256": state.digest})
                continue
            if state is None or state.state != "changed":
                if isinstance(name, str):
                    self._changed.pop(name, None)
                    self._unreviewed.pop(name, None)
                    if state is not None and len(self._reviewed) < MAX_ANNOTATED_TOOLS:
                        self._reviewed.add(name)
                if state is not None and state.state == "pinned":
                    pinned.append({"tool": name, "definition_sha256": state.digest})
                kept.append(tool)
                continue
            assert isinstance(name, str)  # noqa: S101 - seen is keyed by name
            self._reviewed.discard(name)
            fields = ", ".join(state.changed_fields) or "its definition"
            if self._changed.get(name, (None,))[0] != state.digest:
                if name in self._changed or len(self._changed) < MAX_ANNOTATED_TOOLS:
                    self._changed[name] = (state.digest, fields)
                # approvals remembered for the tool were given for the old definition
                forgotten = self.pep.limits.approvals.forget_tool(name)
                log.warning("tool %s changed since it was pinned (%s)", ascii(name[:64]), fields)
                self.trail.record_soon(
                    SystemEvent(
                        event="tool_definition_changed",
                        session_id=self.pep.session.id,
                        detail={
                            "tool": name,
                            "backend": self._backend_ref,
                            "pinned_sha256": state.pinned_digest,
                            "definition_sha256": state.digest,
                            "changed": list(state.changed_fields),
                            "approvals_forgotten": forgotten,
                        },
                    )
                )
        if pinned:
            self.trail.record_soon(
                SystemEvent(
                    event="tools_pinned",
                    session_id=self.pep.session.id,
                    detail={"backend": self._backend_ref, "tools": pinned},
                )
            )
        if waiting:
            log.warning("%d new tool(s) wait for review: mcp-acp tools pins", len(waiting))
            self.trail.record_soon(
                SystemEvent(
                    event="tools_awaiting_review",
                    session_id=self.pep.session.id,
                    detail={"backend": self._backend_ref, "tools": waiting},
                )
            )
        return kept

    def _quarantine(self, key: str, entry: dict[str, Any]) -> bool:
        """Whether ``entry`` (of the list ``key`` names) carries hidden-instruction markers:
        if so it is not listed and the requests using it are denied until a list defines it
        cleanly. A definition newly quarantined is recorded (``tool_quarantined``,
        ``resource_quarantined``, …), once per session and definition, like a relayed
        answer: handed to the trail, not waited for (if it cannot be written, the trail
        fails and the proxy shuts down; the entry is hidden either way)."""
        kind, held = _KINDS[key], self._quarantined[key]
        name = entry.get(kind.key)
        findings = screen_entry(entry)
        if not isinstance(name, str):
            return bool(findings)  # never usable by name anyway
        if not findings:
            held.pop(name, None)
            return False
        self._hold(key, name, payload_digest(entry)[0], findings)
        return True

    def _one_each(self, key: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``entries`` with each name once. A name listed twice with one definition is kept
        once; listed with different definitions it is ambiguous — which one would a call
        meet? — and quarantined: none of its entries listed, its uses denied (screening on
        or off). Otherwise the pins would compare the first definition and let the other
        through."""
        name_of = _KINDS[key].key
        seen: dict[Any, list[dict[str, Any]]] = {}
        for entry in entries:
            name = entry.get(name_of)
            if isinstance(name, str):
                seen.setdefault(name, []).append(entry)
        twice = self._twice[key]
        ambiguous = {
            name
            for name, group in seen.items()
            if len(group) > 1 and any(other != group[0] for other in group[1:])
        }
        for name in [name for name in twice if name in seen and name not in ambiguous]:
            twice.discard(name)  # listed once (or alike) now: lifted
            self._quarantined[key].pop(name, None)
        if not ambiguous and all(len(group) == 1 for group in seen.values()):
            return entries  # the usual case
        kept = []
        for name in ambiguous:
            group = seen[name]
            if name in twice or len(twice) < MAX_ANNOTATED_TOOLS:
                twice.add(name)
            findings = [f"listed {len(group)} times, with different definitions"]
            self._hold(key, name, payload_digest(group)[0], findings)
        done: set[str] = set()
        for entry in entries:
            name = entry.get(name_of)
            if not isinstance(name, str):
                kept.append(entry)
            elif name not in ambiguous and name not in done:
                done.add(name)
                kept.append(entry)
        return kept

    def _hold(self, key: str, name: str, digest: str, findings: list[str]) -> None:
        """Quarantine ``name`` (of the list ``key`` names) for ``findings``; recorded once
        per session and definition (``digest``)."""
        kind, held = _KINDS[key], self._quarantined[key]
        if held.get(name, (None,))[0] != digest:
            if name in held or len(held) < MAX_ANNOTATED_TOOLS:
                held[name] = (digest, "; ".join(findings))
            if key == "tools":
                self.pep.limits.approvals.forget_tool(name)  # given for another definition
            log.warning("%s %s quarantined: %s", kind.noun, ascii(name[:64]), "; ".join(findings))
            self.trail.record_soon(
                SystemEvent(
                    event=kind.event,
                    session_id=self.pep.session.id,
                    detail={kind.detail: name, "definition_sha256": digest, "findings": findings},
                )
            )

    def _remember_annotations(self, tool: dict[str, Any]) -> None:
        """A listed tool's annotations, and the argument names of a strict input schema
        (``additionalProperties: false``), as the backend last listed them."""
        name, annotations = tool.get("name"), tool.get("annotations")
        if not isinstance(name, str):
            return
        if name not in self._listed and len(self._listed) < MAX_ANNOTATED_TOOLS:
            self._listed.add(name)
            self._listed_folded.setdefault(name.casefold(), name)
        if isinstance(annotations, dict):
            if name in self._annotations or len(self._annotations) < MAX_ANNOTATED_TOOLS:
                self._annotations[name] = annotations
        else:
            self._annotations.pop(name, None)  # listed again without: none now
        schema = tool.get("inputSchema")
        properties = schema.get("properties", {}) if isinstance(schema, dict) else None
        if (
            isinstance(schema, dict)
            and schema.get("additionalProperties") is False
            and isinstance(properties, dict)
        ):
            if name in self._strict or len(self._strict) < MAX_ANNOTATED_TOOLS:
                self._strict[name] = frozenset(k for k in properties if isinstance(k, str))
        else:
            self._strict.pop(name, None)  # listed again with a schema that allows more


def _answer(could: object) -> bool:
    """A policy engine's ``could_allow`` answer, which must be a ``bool``: anything else —
    the coroutine of an ``async def could_allow`` (truthy, and never run), a rule object —
    is the engine's failure (``TypeError``: the entry is not listed)."""
    if isinstance(could, bool):
        return could
    if inspect.iscoroutine(could):
        could.close()
    raise TypeError(f"could_allow() returned {type(could).__name__}, not a bool")

"""Pure parsers: the text a macOS tool printed → ``(status, detail)``.

Each parser passes only on the exact wording that means "on"; anything it does not
recognise is ``UNKNOWN`` with the first line quoted, never a pass — and so is output that
states its answer more than once, differently (the tools print one).
"""

from __future__ import annotations

import re

from mcp_acp.models import PostureStatus

__all__ = ["parse_csrutil", "parse_fdesetup", "parse_socketfilterfw", "parse_spctl"]

Outcome = tuple[PostureStatus, str]


def _contradictory(tool: str) -> Outcome:
    return PostureStatus.UNKNOWN, f"contradictory output from {tool}: more than one answer"


def _unexpected(tool: str, text: str) -> Outcome:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    shown = repr(first[:120]) if first else "nothing"
    return PostureStatus.UNKNOWN, f"unexpected output from {tool}: {shown}"


_FV_STATE = re.compile(r"^FileVault is (On|Off)\b(.*)$", re.MULTILINE)
_FV_PROGRESS = re.compile(
    r"^(Encryption|Decryption) in progress: Percent completed = ([0-9.]+)", re.MULTILINE
)


def parse_fdesetup(text: str) -> Outcome:
    """``fdesetup status``: pass only when FileVault is on and no conversion is running."""
    progress = _FV_PROGRESS.search(text)
    if progress:
        verb, percent = progress.groups()
        return (
            PostureStatus.FAIL,
            f"FileVault {verb.lower()} in progress ({percent}% done): "
            "the startup disk is not fully encrypted",
        )
    if len({found.group(1) for found in _FV_STATE.finditer(text)}) > 1:
        return _contradictory("fdesetup status")
    state = _FV_STATE.search(text)
    if state is None:
        return _unexpected("fdesetup status", text)
    value, rest = state.group(1), state.group(2).strip()
    if value == "Off":
        if "will be enabled" in rest or "Deferred enablement" in text:
            return PostureStatus.FAIL, "FileVault is off (enablement deferred to a later login)"
        return PostureStatus.FAIL, "FileVault is off"
    if rest == ".":
        return PostureStatus.PASS, "FileVault is on"
    return _unexpected("fdesetup status", text)


_SIP_STATE = re.compile(
    r"^System Integrity Protection status: (\w+)( \(Custom Configuration\))?\.", re.MULTILINE
)
_SIP_ITEM = re.compile(r"^\s*([A-Za-z][A-Za-z -]*?): (enabled|disabled)\s*$", re.MULTILINE)
# Disabled on every shipping Mac; its state says nothing about the device's protection.
_SIP_IGNORED = {"Apple Internal"}


def parse_csrutil(text: str) -> Outcome:
    """``csrutil status``: pass only when SIP is fully enabled (no custom configuration)."""
    if len({found.groups() for found in _SIP_STATE.finditer(text)}) > 1:
        return _contradictory("csrutil status")
    state = _SIP_STATE.search(text)
    if state is None:
        return _unexpected("csrutil status", text)
    value, custom = state.group(1), state.group(2)
    if custom:
        off = [
            name
            for name, item in _SIP_ITEM.findall(text)
            if item == "disabled" and name not in _SIP_IGNORED
        ]
        which = f": {', '.join(off)} disabled" if off else ""
        return PostureStatus.FAIL, f"System Integrity Protection has a custom configuration{which}"
    if value == "enabled":
        return PostureStatus.PASS, "System Integrity Protection is enabled"
    if value == "disabled":
        return PostureStatus.FAIL, "System Integrity Protection is disabled"
    return _unexpected("csrutil status", text)


def parse_spctl(text: str) -> Outcome:
    """``spctl --status``: Gatekeeper's assessments enabled or disabled."""
    lines = {line.strip() for line in text.splitlines()}
    if {"assessments enabled", "assessments disabled"} <= lines:
        return _contradictory("spctl --status")
    if "assessments enabled" in lines:
        return PostureStatus.PASS, "Gatekeeper assessments are enabled"
    if "assessments disabled" in lines:
        return PostureStatus.FAIL, "Gatekeeper assessments are disabled"
    return _unexpected("spctl --status", text)


_FW_STATE = re.compile(r"\(State = ([0-9]+)\)")  # ASCII digits: int() reads others too
_FW_MEANING = {
    0: "the application firewall is off",
    1: "the application firewall is on",
    2: "the application firewall is on and blocks all incoming connections",
}


def parse_socketfilterfw(text: str, *, require_block_all: bool = False) -> Outcome:
    """``socketfilterfw --getglobalstate``: the global state number 0, 1 or 2."""
    if len(set(_FW_STATE.findall(text))) > 1:
        return _contradictory("socketfilterfw --getglobalstate")
    found = _FW_STATE.search(text)
    if found is None or int(found.group(1)) not in _FW_MEANING:
        return _unexpected("socketfilterfw --getglobalstate", text)
    state = int(found.group(1))
    meaning = f"{_FW_MEANING[state]} (state {state})"
    if state == 0:
        return PostureStatus.FAIL, meaning
    if require_block_all and state != 2:
        return PostureStatus.FAIL, f"{meaning}; the config requires blocking all incoming"
    return PostureStatus.PASS, meaning

"""Smoke test of the soak: a 45-second ``--quick`` run (20 s tokens) of ``bench/soak.py`` in
a subprocess, against the real test IdP (its ``node_modules`` installed by the soak with
``npm ci`` when missing, as the oidc tests' fixture does).

Checks what the run must get right — exit 0, every call answered, tokens refreshed, one
decision record per call, the audit trail verified, both resource checks reported — never
the timings or the memory figures themselves. Like the soak, it must run as root (CI does):
``mcp-acp run`` is not dumpable, so only root can read its ``/proc/PID/fd``."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    """The soak script as a module (``bench/`` is on pytest's pythonpath)."""
    return importlib.import_module("soak")


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in the report:\n{text}"
    return int(found.group(1).replace(",", ""))


def test_quick_soak_answers_every_call_refreshes_and_records_each_decision(
    tmp_path: Path,
) -> None:
    out = tmp_path / "soak.md"
    scratch = tmp_path / "scratch"
    result = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--quick",
            "--minutes",
            "0.75",
            "--dir",
            str(scratch),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,  # a first run also installs the IdP's npm packages
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert text in result.stdout
    assert not scratch.exists()  # config, token store and audit logs removed

    calls = _count(r"- Calls: ([\d,]+) made, 0 failed", text)
    denied = _count(r"`rm_rf`: ([\d,]+) denied with error -32003", text)
    refreshed = _count(r"- Refreshes: (\d+) `token_refreshed` events", text)
    decisions = _count(r"([\d,]+) `tools/call` decision records = [\d,]+ calls made", text)
    assert calls > 100
    assert denied == calls // 100
    assert refreshed > 0
    assert decisions == calls
    assert "`mcp-acp audit verify` passed" in text
    assert "every one for alice, provenance token" in text
    assert "The proxy exited 0" in text

    header = "| minute | calls | RSS MB | HWM MB | fds | threads | backend RSS MB | refreshes |"
    table = text.split(header, 1)[1].split("\n\n", 1)[0].splitlines()[2:]  # after the rule
    assert len(table) >= 2
    for row in table:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 8
        assert int(cells[4]) > 0  # fds were counted (readable: root)
    assert re.search(r"^Check RSS growth after warm-up: (MET|NOT MET) \(", text, re.MULTILINE)
    assert re.search(r"^Check fd count stable: (MET|NOT MET) \(", text, re.MULTILINE)


def test_resource_checks_use_the_stated_windows(soak: ModuleType) -> None:
    """The arithmetic of the two checks, on made-up samples (60 min, one a minute)."""
    settings = soak.Settings(minutes=60, rate=20, token_ttl=60, sample_seconds=60, call_timeout=30)
    run = soak.Run(settings=settings, command="test")
    for minute in range(61):
        rss_kb = 50_000 + (1_000 if minute >= 54 else 0)  # +1 MB (1,024,000 bytes) at the end
        fds = 20 if minute == 0 else 17  # busier at the start, then stable
        run.samples.append(
            soak.Sample(
                t_s=minute * 60.0,
                calls=minute * 1200,
                refreshes=minute,
                rss_kb=rss_kb,
                hwm_kb=rss_kb,
                fds=fds,
                threads=3,
                backend_rss_kb=60_000,
            )
        )
    checks = soak.resource_checks(run)
    assert [s.t_s / 60 for s in checks.warm] == [6, 7, 8, 9, 10, 11]
    assert [s.t_s / 60 for s in checks.last] == [55, 56, 57, 58, 59, 60]
    assert checks.rss_growth_mb == pytest.approx(1.024)
    assert checks.rss_met
    assert checks.fd_window[0].t_s == 60.0  # the first minute is left out
    assert checks.fd_spread == 0
    assert checks.fd_met
    run.samples[30].fds = 18  # one more fd at half-time
    assert not soak.resource_checks(run).fd_met
    assert len(soak.downsample(run.samples)) == 20
    assert soak.downsample(run.samples)[-1] is run.samples[-1]


def test_refuses_to_run_without_root(
    soak: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert soak.main(["--quick"]) == 2
    assert "run it as root" in capsys.readouterr().err

"""Developer entry point: ``nox -s tests|lint|typecheck|build|demo|bench``.

Every session installs what it needs from the project's own files into its own virtualenv
under ``.nox/``; nothing is installed globally.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "tests"]


def _distributions() -> list[str]:
    """Editable installs of the core plus every plugin and example distribution."""
    found = sorted(str(p.parent) for p in ROOT.glob("plugins/*/pyproject.toml"))
    found += sorted(str(p.parent) for p in ROOT.glob("examples/*/pyproject.toml"))
    return ["-e", ".[dev]", *[arg for path in found for arg in ("-e", path)]]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (pytest's exit 5, 'no tests collected', fails the session)."""
    session.install(*_distributions(), "-r", "bench/requirements.txt")  # bench smoke tests
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the core package and every plugin package under plugins/."""
    session.install(*_distributions())
    packages = sorted(str(p) for p in ROOT.glob("plugins/*/src/*") if p.name.isidentifier())
    session.run("mypy", "--strict", "mcp_acp", *packages)


@nox.session
def build(session: nox.Session) -> None:
    """Wheels for the core and every distribution under plugins/ and examples/ into dist/."""
    session.install("build>=1.2")
    session.run("python", "scripts/build_wheels.py", str(ROOT / "dist"))


@nox.session
def demo(session: nox.Session) -> None:
    """``mcp-acp demo``: the whole path, end to end, in a throw-away home directory.

    ``nox -s demo -- --keep DIR`` leaves the demo's home in DIR.
    """
    session.install("-e", ".")
    session.run("mcp-acp", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks: policy decisions (acp against cedarpy), audit writes, the relay
    (``mcp-acp run`` against the backend direct and the FastMCP proxy), the per-request
    identity cost (the ``oidc`` provider against a bare PyJWT decode), the idle cost
    (the same work back to back and after an idle gap; a diagnostic) and the start-up up
    to the backend spawn (a diagnostic; needs valgrind for its instruction counts).

    ``nox -s bench -- --quick`` runs all six as smoke runs.
    """
    session.install("-e", ".", "-e", "plugins/mcp-acp-oidc", "-r", "bench/requirements.txt")
    session.run("python", "bench/policy_bench.py", *session.posargs)
    session.run("python", "bench/audit_bench.py", *session.posargs)
    session.run("python", "bench/relay_bench.py", *session.posargs)
    session.run("python", "bench/identity_bench.py", *session.posargs)
    session.run("python", "bench/idle_bench.py", *session.posargs)
    session.run("python", "bench/startup_bench.py", *session.posargs)

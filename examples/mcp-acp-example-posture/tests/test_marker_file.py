"""The example plugin against real files, and through the real plugin loader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mcp_acp_example_posture import MarkerFileCheck, MarkerFileConfig, inspect_marker
from pydantic import ValidationError

from mcp_acp.models import PostureStatus
from mcp_acp.plugins import load_plugins
from mcp_acp.registry import Kind, PluginContext


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "enrolled"
    path.write_text("yes")
    path.chmod(0o644)
    return path


def test_present_marker_passes(marker: Path) -> None:
    assert inspect_marker(marker) == (PostureStatus.PASS, f"{marker} present")


def test_missing_marker_fails(tmp_path: Path) -> None:
    status, detail = inspect_marker(tmp_path / "absent")
    assert status is PostureStatus.FAIL
    assert "does not exist" in detail


def test_world_writable_marker_fails(marker: Path) -> None:
    marker.chmod(0o666)
    assert inspect_marker(marker)[0] is PostureStatus.FAIL


def test_symlink_is_not_a_marker(marker: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(marker)
    status, detail = inspect_marker(link)
    assert (status, "not a regular file" in detail) == (PostureStatus.FAIL, True)


def test_foreign_owner_fails(marker: Path) -> None:
    if os.geteuid() == 0:
        os.chown(marker, 65534, 65534)  # as root: really give the file to 'nobody'
        status, detail = inspect_marker(marker)
    else:
        # not root: we cannot give files away, so look at ours as another user would
        status, detail = inspect_marker(marker, uid=os.geteuid() + 4242)
    assert status is PostureStatus.FAIL
    assert "owned by uid" in detail


def test_relative_path_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="absolute"):
        MarkerFileConfig.model_validate({"path": "relative/marker"})


async def test_check_through_the_loader(marker: Path, tmp_path: Path) -> None:
    plugins = load_plugins({"example-posture"})
    registration = plugins.registry.get(Kind.POSTURE_CHECK, "marker-file")
    assert registration is not None
    assert registration.plugin == "example-posture"
    options = registration.config_model.model_validate({"path": str(marker)})
    check = registration.factory(options, PluginContext(tmp_path / "c.json", tmp_path))
    assert isinstance(check, MarkerFileCheck)
    result = await check.check()
    assert result.passed
    marker.unlink()
    assert (await check.check()).status is PostureStatus.FAIL

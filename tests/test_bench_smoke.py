"""Smoke test of the policy benchmark: generator and acp/Cedar equivalence, no timings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "policy_bench.py"


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("policy_bench", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_generated_policies_decide_alike_in_acp_and_cedar() -> None:
    pytest.importorskip("cedarpy")
    bench = _load_bench()
    workload = bench.build_workload(10)
    assert len(workload.policy_data["rules"]) == 10
    assert workload.policy_data == bench.build_workload(10).policy_data  # fixed seed
    engine = bench.acp_engine(workload)
    policy_set, entities = bench.cedar_handles(workload)
    mismatches, allowed = bench.check_equivalence(workload, engine, policy_set, entities)
    assert mismatches == []
    assert 0 < allowed < len(workload.requests)  # the mix has both allows and denies

"""Targets, phases and cohorts of a rollout."""

from datetime import UTC, datetime

from agent.protocol.metadata import ArtifactVariant, Compatibility, Release, Runtime, TensorSpec
from agent.protocol.verify import DeviceFacts
from fleet_server.rollouts.planning import (
    InventoryFilter,
    PhaseSpec,
    TargetSpec,
    cohort_of,
    cumulative_sizes,
    plan,
    select_targets,
    stable_order,
)

WHEN = datetime(2026, 12, 1, tzinfo=UTC)


def release(*variants: ArtifactVariant) -> Release:
    return Release("m", 1, variants, (TensorSpec("x", "float32", (None, 4)),), (), WHEN, WHEN)


def variant(name: str, runtime: Runtime, arch: tuple[str, ...] = (), ram: int = 0) -> ArtifactVariant:
    return ArtifactVariant(name, f"{name}.bin", runtime, "fp32", "0" * 64, 10, Compatibility(arch, ram))


def facts(device_id: str, arch: str = "aarch64", ram: int = 1024, runtimes: tuple[str, ...] = ("onnxruntime",)):
    return DeviceFacts(device_id, arch, ram, runtimes)


def share(*shares: float) -> list[PhaseSpec]:
    return [PhaseSpec(value, None, 0, 1.0) for value in shares]


def test_cumulative_sizes_round_up_and_end_with_everyone() -> None:
    assert cumulative_sizes(20, share(0.1, 0.5, 1.0)) == [2, 10, 20]
    assert cumulative_sizes(3, share(0.01, 1.0)) == [1, 3]
    assert cumulative_sizes(3, [PhaseSpec(None, 1, 0, 1), PhaseSpec(None, 10, 0, 1)]) == [1, 3]
    assert cumulative_sizes(5, share(0.5, 0.2)) == [3, 5]  # never shrinks, the last takes the rest
    assert cumulative_sizes(0, share(0.1, 1.0)) == [0, 0]


def test_the_order_is_stable_and_differs_between_rollouts() -> None:
    ids = [f"d{i}" for i in range(20)]
    assert stable_order(1, ids) == stable_order(1, reversed(ids))
    assert stable_order(1, ids) != stable_order(2, ids)


def test_targets_by_ids_tags_and_inventory() -> None:
    fleet = [facts("a"), facts("b", arch="x86_64"), facts("c", ram=256), facts("d", runtimes=("tflite",))]
    tags = {"a": {"line-3"}, "b": {"line-3"}, "c": {"line-3"}}
    assert select_targets(TargetSpec(tags=("line-3",)), fleet, tags) == ["a", "b", "c"]
    assert select_targets(TargetSpec(device_ids=("d",), tags=("line-3",),
                                     filter=InventoryFilter(arch=("aarch64",))), fleet, tags) == ["a", "c", "d"]
    assert select_targets(TargetSpec(all_devices=True, filter=InventoryFilter(min_ram_mb=512,
                                                                             runtimes=("onnxruntime",))),
                          fleet, tags) == ["a", "b"]


def test_cohorts_interleave_evenly() -> None:
    assert [cohort_of(i, 0.5) for i in range(6)] == ["a", "b", "a", "b", "a", "b"]
    assert [cohort_of(i, 0.25) for i in range(8)].count("b") == 2
    assert {cohort_of(i, 0.0) for i in range(5)} == {"a"}


def test_plan_places_compatible_devices_in_phases_and_reports_the_rest() -> None:
    onnx_only = release(variant("onnx-fp32", Runtime.ONNXRUNTIME))
    fleet = [facts(f"d{i}") for i in range(9)] + [facts("lite", runtimes=("tflite",))]
    placements = plan(7, fleet, share(0.1, 0.5, 1.0), {"a": onnx_only})
    by_id = {p.device_id: p for p in placements}
    assert by_id["lite"].phase is None and by_id["lite"].variant is None
    assert "no variant" in (by_id["lite"].reason or "")
    phases = [p.phase for p in placements if p.phase is not None]
    assert sorted(phases) == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert [p.position for p in placements] == list(range(10))


def test_plan_picks_each_cohorts_fitting_variant() -> None:
    a = release(variant("tflite-int8", Runtime.TFLITE), variant("onnx-fp32", Runtime.ONNXRUNTIME))
    b = release(variant("onnx-big", Runtime.ONNXRUNTIME, ram=2048))
    fleet = [facts("lite", runtimes=("tflite", "onnxruntime")), facts("onnx"), facts("big", ram=4096)]
    placements = plan(1, fleet, share(1.0), {"a": a, "b": b}, b_share=0.5)
    chosen = {p.device_id: (p.cohort, p.variant) for p in placements}
    assert sum(1 for cohort, _ in chosen.values() if cohort == "b") == 1
    for device_id, (cohort, picked) in chosen.items():
        if cohort == "a":
            assert picked == ("tflite-int8" if device_id == "lite" else "onnx-fp32")
        else:
            assert picked == ("onnx-big" if device_id == "big" else None)

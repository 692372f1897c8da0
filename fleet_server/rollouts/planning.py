"""How a rollout's target is chosen and split into phases and cohorts. Pure.

- The target is the union of the listed device ids and the devices carrying
  any listed tag (or every device, with ``all``), narrowed by an inventory
  filter (architecture, RAM, runtime).
- The devices are put in a stable pseudo-random order (sha256 of rollout id
  and device id), so phase 1 is not always the same few devices and a plan
  computed twice is the same plan.
- Phases are cumulative: "10 %, 50 %, 100 %" means phase 2 brings the total
  to half the devices. A share rounds up (a phase is never empty when there
  are devices); the last phase always covers the whole target.
- An A/B rollout puts ``b_share`` of the devices in cohort "b", spread evenly
  along the order so every phase holds both cohorts in proportion.
- A device no variant of its cohort's release fits is incompatible: it is in
  no phase and never notified (``agent.protocol.verify.choose_variant``, the
  rule the device itself applies).
"""

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.protocol.errors import NoCompatibleVariantError
from agent.protocol.metadata import Release
from agent.protocol.verify import DeviceFacts, choose_variant


@dataclass(frozen=True)
class InventoryFilter:
    arch: tuple[str, ...] = ()  # any of these architectures (empty: any)
    min_ram_mb: int | None = None
    max_ram_mb: int | None = None
    runtimes: tuple[str, ...] = ()  # devices that have every one of these runtimes

    def matches(self, facts: DeviceFacts) -> bool:
        return (
            (not self.arch or facts.arch in self.arch)
            and (self.min_ram_mb is None or facts.ram_mb >= self.min_ram_mb)
            and (self.max_ram_mb is None or facts.ram_mb <= self.max_ram_mb)
            and all(runtime in facts.runtimes for runtime in self.runtimes)
        )


@dataclass(frozen=True)
class TargetSpec:
    device_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    all_devices: bool = False
    filter: InventoryFilter = field(default_factory=InventoryFilter)


@dataclass(frozen=True)
class PhaseSpec:
    share: float | None  # cumulative share of the target in (0, 1], or
    count: int | None  # cumulative number of devices
    bake_s: float
    success_threshold: float


@dataclass(frozen=True)
class Placement:
    device_id: str
    position: int
    phase: int | None  # None: incompatible
    cohort: str
    variant: str | None  # the variant the device will pick (None: incompatible)
    reason: str | None = None


def select_targets(spec: TargetSpec, facts: Iterable[DeviceFacts], tags_by_device: dict[str, set[str]]) -> list[str]:
    """The device ids the target selects, sorted."""
    wanted_ids, wanted_tags = set(spec.device_ids), set(spec.tags)
    chosen = []
    for device in facts:
        named = spec.all_devices or device.device_id in wanted_ids or bool(
            wanted_tags & tags_by_device.get(device.device_id, set()))
        if named and spec.filter.matches(device):
            chosen.append(device.device_id)
    return sorted(chosen)


def stable_order(rollout_id: int, device_ids: Iterable[str]) -> list[str]:
    def key(device_id: str) -> str:
        return hashlib.sha256(f"{rollout_id}:{device_id}".encode()).hexdigest()

    return sorted(device_ids, key=key)


def cumulative_sizes(total: int, phases: Sequence[PhaseSpec]) -> list[int]:
    """Devices in phases 1..i for every i; non-decreasing, the last is ``total``."""
    sizes: list[int] = []
    for phase in phases:
        if phase.count is not None:
            size = phase.count
        else:
            assert phase.share is not None
            size = math.ceil(phase.share * total - 1e-9)
        sizes.append(max(min(size, total), min(1, total), sizes[-1] if sizes else 0))
    if sizes:
        sizes[-1] = total
    return sizes


def cohort_of(position: int, b_share: float) -> str:
    """Evenly interleaved: position i is in "b" when floor((i+1)*b) > floor(i*b)."""
    if b_share <= 0:
        return "a"
    return "b" if math.floor((position + 1) * b_share + 1e-9) > math.floor(position * b_share + 1e-9) else "a"


def plan(rollout_id: int, devices: Sequence[DeviceFacts], phases: Sequence[PhaseSpec],
         releases: dict[str, Release], b_share: float = 0.0) -> list[Placement]:
    """Positions, cohorts, variants and phases of the target's devices (``releases``: cohort -> release)."""
    by_id = {device.device_id: device for device in devices}
    placements: list[Placement] = []
    compatible: list[tuple[int, str, str, str]] = []
    for position, device_id in enumerate(stable_order(rollout_id, by_id)):
        cohort = cohort_of(position, b_share)
        try:
            variant = choose_variant(releases[cohort], by_id[device_id]).name
        except NoCompatibleVariantError as exc:
            placements.append(Placement(device_id, position, None, cohort, None, str(exc)))
            continue
        compatible.append((position, device_id, cohort, variant))
    sizes = cumulative_sizes(len(compatible), phases)
    for rank, (position, device_id, cohort, variant) in enumerate(compatible):
        phase = next(index for index, size in enumerate(sizes) if rank < size)
        placements.append(Placement(device_id, position, phase, cohort, variant))
    return sorted(placements, key=lambda placement: placement.position)

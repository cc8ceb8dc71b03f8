"""Binding whole IOMMU groups to vfio-pci and giving them back, checked by the files written."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mxvm.devices.vfio import (
    BindResult,
    PassthroughError,
    ReleaseResult,
    bind_group,
    release_group,
)
from mxvm.devices.vfio_state import STATE_FILE, load_state
from mxvm.errors import InvalidState, MxvmError
from tests.devices.fake_sysfs import (
    FakeKernel,
    FakePci,
    MakeKernel,
    SimulatedCrash,
    bridge,
    gpu,
    gpu_audio,
)

GPU = "0000:65:00.0"
AUDIO = "0000:65:00.1"
GPU2 = "0000:b3:00.0"
AUDIO2 = "0000:b3:00.1"


async def bind(kernel: FakeKernel, address: str, state_dir: Path, **kw: float) -> BindResult:
    return await bind_group(
        kernel.root,
        address,
        state_dir=state_dir,
        dev_root=kernel.dev_root,
        writer=kernel.write,
        **kw,
    )


async def release(kernel: FakeKernel, address: str, state_dir: Path, **kw: float) -> ReleaseResult:
    return await release_group(kernel.root, address, state_dir=state_dir, writer=kernel.write, **kw)


def gpu_with_audio(make_kernel: MakeKernel, **options: object) -> FakeKernel:
    return make_kernel([gpu(GPU, 12), gpu_audio(AUDIO, 12)], **options)


# ---- (a) a GPU and its audio function share group 12 -----------------------------------


async def test_bind_takes_the_whole_group(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = gpu_with_audio(make_kernel)

    result = await bind_group(
        kernel.root, GPU, state_dir=state_dir, dev_root=kernel.dev_root, writer=kernel.write
    )

    assert result.iommu_group == 12
    assert result.members == [GPU, AUDIO] and result.newly_bound == [GPU, AUDIO]
    assert result.vfio_device == str(kernel.dev_root / "vfio" / "12")
    assert kernel.writes_for(GPU) == [
        (f"bus/pci/devices/{GPU}/driver_override", "vfio-pci"),
        (f"bus/pci/devices/{GPU}/driver/unbind", GPU),
        ("bus/pci/drivers_probe", GPU),
    ]
    assert kernel.writes_for(AUDIO) == [
        (f"bus/pci/devices/{AUDIO}/driver_override", "vfio-pci"),
        (f"bus/pci/devices/{AUDIO}/driver/unbind", AUDIO),
        ("bus/pci/drivers_probe", AUDIO),
    ]
    # The kernel ABI, as files: the unbind went to each original driver's file.
    assert kernel.driver_file("nvidia", "unbind") == GPU
    assert kernel.driver_file("snd_hda_intel", "unbind") == AUDIO
    assert kernel.override(GPU) == kernel.override(AUDIO) == "vfio-pci"
    assert kernel.driver(GPU) == kernel.driver(AUDIO) == "vfio-pci"
    assert kernel.vfio_dev(12).exists()
    saved = json.loads((state_dir / STATE_FILE).read_text())["members"]
    assert {a: m["original_driver"] for a, m in saved.items()} == {
        GPU: "nvidia",
        AUDIO: "snd_hda_intel",
    }


async def test_release_restores_both_drivers(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = gpu_with_audio(make_kernel)
    await bind(kernel, GPU, state_dir)
    kernel.writes.clear()

    result = await release_group(kernel.root, GPU, state_dir=state_dir, writer=kernel.write)

    assert result.iommu_group == 12
    assert result.restored == {GPU: "nvidia", AUDIO: "snd_hda_intel"}
    assert kernel.writes_for(GPU) == [
        (f"bus/pci/devices/{GPU}/driver/unbind", GPU),
        (f"bus/pci/devices/{GPU}/driver_override", "\n"),
        ("bus/pci/drivers_probe", GPU),
    ]
    assert kernel.driver_file("vfio-pci", "unbind") == AUDIO  # the last one written
    assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nvidia", "snd_hda_intel")
    assert kernel.override(GPU) == kernel.override(AUDIO) == "(null)"
    assert not kernel.vfio_dev(12).exists()
    assert load_state(state_dir).members == {}


async def test_bind_and_release_are_idempotent(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = gpu_with_audio(make_kernel)
    await bind(kernel, GPU, state_dir)
    kernel.writes.clear()

    again = await bind_group(
        kernel.root, AUDIO, state_dir=state_dir, dev_root=kernel.dev_root, writer=kernel.write
    )
    assert again.already_bound and again.members == [GPU, AUDIO]
    assert kernel.writes == []

    await release(kernel, GPU, state_dir)
    kernel.writes.clear()
    second = await release_group(kernel.root, GPU, state_dir=state_dir, writer=kernel.write)
    assert second.restored == {} and kernel.writes == []
    assert kernel.driver(GPU) == "nvidia"


# ---- (b) two GPUs in separate groups ------------------------------------------------


async def test_separate_groups_bind_independently(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = make_kernel([gpu(GPU, 12), gpu_audio(AUDIO, 12), gpu(GPU2, 40), gpu_audio(AUDIO2, 40)])
    await bind(kernel, GPU, state_dir)
    assert (kernel.driver(GPU2), kernel.driver(AUDIO2)) == ("nvidia", "snd_hda_intel")
    assert kernel.writes_for(GPU2) == [] and not kernel.vfio_dev(40).exists()

    second = await bind_group(
        kernel.root, GPU2, state_dir=state_dir, dev_root=kernel.dev_root, writer=kernel.write
    )
    assert second.iommu_group == 40 and second.newly_bound == [GPU2, AUDIO2]

    await release(kernel, GPU, state_dir)
    assert kernel.driver(GPU) == "nvidia"
    assert kernel.driver(GPU2) == kernel.driver(AUDIO2) == "vfio-pci"
    assert kernel.vfio_dev(40).exists() and not kernel.vfio_dev(12).exists()
    assert sorted(load_state(state_dir).members) == [GPU2, AUDIO2]


async def test_concurrent_binds_keep_every_state_entry(
    make_kernel: MakeKernel, state_dir: Path
) -> None:
    kernel = make_kernel([gpu(GPU, 12), gpu_audio(AUDIO, 12), gpu(GPU2, 40), gpu_audio(AUDIO2, 40)])
    await asyncio.gather(bind(kernel, GPU, state_dir), bind(kernel, GPU2, state_dir))
    assert sorted(load_state(state_dir).members) == [GPU, AUDIO, GPU2, AUDIO2]


# ---- (c) IOMMU off, (d) group shared with a busy device -------------------------------


async def test_iommu_off_refuses(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = gpu_with_audio(make_kernel, iommu=False)
    with pytest.raises(PassthroughError, match="iommu disabled") as info:
        await bind(kernel, GPU, state_dir)
    assert isinstance(info.value, MxvmError) and info.value.pci_address == GPU
    assert info.value.detail == f"cannot pass through {GPU}: iommu disabled"
    assert kernel.writes == [] and not (state_dir / STATE_FILE).exists()
    assert kernel.driver(GPU) == "nvidia"


async def test_shared_group_refuses(make_kernel: MakeKernel, state_dir: Path) -> None:
    busy = FakePci(
        "0000:00:1f.3", vendor="0x8086", klass="0x040300", driver="snd_hda_intel", group=12
    )
    kernel = make_kernel([gpu(GPU, 12), gpu_audio(AUDIO, 12), busy])
    with pytest.raises(PassthroughError) as info:
        await bind(kernel, GPU, state_dir)
    assert info.value.detail == (
        f"cannot pass through {GPU}: group 12 shared with 0000:00:1f.3 (in use by snd_hda_intel)"
    )
    assert kernel.writes == [] and not (state_dir / STATE_FILE).exists()


async def test_vfio_driver_missing_refuses(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = gpu_with_audio(make_kernel, vfio_loaded=False)
    with pytest.raises(PassthroughError, match=r"vfio-pci driver not loaded"):
        await bind(kernel, GPU, state_dir)
    assert kernel.writes == []


# ---- (e) bridges are left alone; other members --------------------------------------


async def test_bridge_in_group_is_left_alone(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = make_kernel([bridge("0000:64:00.0", 12), gpu(GPU, 12), gpu_audio(AUDIO, 12)])
    result = await bind_group(
        kernel.root, GPU, state_dir=state_dir, dev_root=kernel.dev_root, writer=kernel.write
    )
    assert result.members == [GPU, AUDIO]
    assert kernel.writes_for("0000:64:00.0") == []
    assert kernel.driver("0000:64:00.0") == "pcieport"
    await release(kernel, GPU, state_dir)
    assert kernel.driver("0000:64:00.0") == "pcieport"


async def test_unbound_and_prebound_members(make_kernel: MakeKernel, state_dir: Path) -> None:
    """An unbound member is held by vfio-pci while passed through and left unbound after;
    one the operator bound to vfio-pci beforehand stays there."""
    free, held = "0000:66:00.0", "0000:67:00.0"
    kernel = make_kernel(
        [gpu(GPU, 12), gpu(free, 12, driver=None), gpu(held, 12, driver="vfio-pci")]
    )
    result = await bind_group(
        kernel.root, GPU, state_dir=state_dir, dev_root=kernel.dev_root, writer=kernel.write
    )
    assert result.newly_bound == [GPU, free]
    assert kernel.writes_for(free) == [
        (f"bus/pci/devices/{free}/driver_override", "vfio-pci"),
        ("bus/pci/drivers_probe", free),
    ]
    kernel.writes.clear()

    restored = await release_group(kernel.root, GPU, state_dir=state_dir, writer=kernel.write)

    assert restored.restored == {GPU: "nvidia", free: None, held: "vfio-pci"}
    assert (kernel.driver(GPU), kernel.driver(free), kernel.driver(held)) == (
        "nvidia",
        None,
        "vfio-pci",
    )
    assert ("bus/pci/drivers_probe", free) not in kernel.writes
    assert kernel.writes_for(held) == []


# ---- verification: production code checks the driver link, not its own writes --------


async def test_probe_that_does_not_reach_vfio_fails(
    make_kernel: MakeKernel, state_dir: Path
) -> None:
    kernel = gpu_with_audio(make_kernel, stuck={AUDIO})
    with pytest.raises(PassthroughError, match=f"{AUDIO} is bound to no driver after probing"):
        await bind(kernel, GPU, state_dir, timeout_s=0.1)
    # The record survives the failure, so a release can undo the half-done bind.
    assert sorted(load_state(state_dir).members) == [GPU, AUDIO]
    kernel.stuck.clear()
    result = await release(kernel, GPU, state_dir)
    assert result.restored == {GPU: "nvidia", AUDIO: "snd_hda_intel"}
    assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nvidia", "snd_hda_intel")


async def test_unbind_that_hangs_times_out(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = gpu_with_audio(make_kernel, slow_unbind={GPU: 0.5})
    with pytest.raises(PassthroughError, match=r"did not finish in 0.1s \(is the device in use"):
        await bind(kernel, GPU, state_dir, timeout_s=0.1)
    await asyncio.sleep(0.5)  # let the blocked write finish before the tree goes away
    assert kernel.writes_for(AUDIO) == []


async def test_missing_vfio_device_node_fails(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = gpu_with_audio(make_kernel, create_vfio_dev=False)
    with pytest.raises(PassthroughError, match=r"vfio/12 did not appear"):
        await bind(kernel, GPU, state_dir, timeout_s=0.1)


async def test_release_falls_back_to_an_explicit_bind(
    make_kernel: MakeKernel, state_dir: Path
) -> None:
    """When drivers_probe finds no driver for it, the original driver's `bind` is used."""
    lonely = FakePci(GPU, group=12, default_driver=None)
    kernel = make_kernel([lonely])
    await bind(kernel, GPU, state_dir)
    await release(kernel, GPU, state_dir, timeout_s=0.1)
    assert kernel.driver_file("nvidia", "bind") == GPU
    assert kernel.driver(GPU) == "nvidia"


async def test_release_leaves_a_function_another_driver_took(
    make_kernel: MakeKernel, state_dir: Path
) -> None:
    kernel = make_kernel(
        [
            gpu(GPU, 12),
            FakePci(AUDIO, klass="0x040300", driver=None, default_driver="snd_hda_intel", group=12),
        ]
    )
    await bind(kernel, GPU, state_dir)
    # Someone moves the audio function from vfio-pci to another driver behind our back.
    kernel.write(kernel.device_dir(AUDIO) / "driver" / "unbind", AUDIO)
    kernel.write(kernel.device_dir(AUDIO) / "driver_override", "\n")
    kernel.write(kernel.pci / "drivers_probe", AUDIO)
    with pytest.raises(PassthroughError, match=f"{AUDIO} is now held by snd_hda_intel"):
        await release(kernel, GPU, state_dir)
    assert kernel.driver(GPU) == "nvidia"
    assert list(load_state(state_dir).members) == [AUDIO]


async def test_corrupt_state_file_stops_binding(make_kernel: MakeKernel, state_dir: Path) -> None:
    kernel = gpu_with_audio(make_kernel)
    state_dir.mkdir()  # noqa: ASYNC240 -- test setup
    (state_dir / STATE_FILE).write_text("{not json")
    with pytest.raises(InvalidState, match="corrupt VFIO state file"):
        await bind(kernel, GPU, state_dir)
    assert kernel.writes == []


# ---- (f) an agent restart in the middle ---------------------------------------------

BIND_WRITES = 6  # two members, three writes each


@pytest.mark.parametrize("crash_at", range(BIND_WRITES))
async def test_bind_resumes_after_a_crash(
    make_kernel: MakeKernel, state_dir: Path, crash_at: int
) -> None:
    kernel = gpu_with_audio(make_kernel, crash_at=crash_at)
    with pytest.raises(SimulatedCrash):
        await bind(kernel, GPU, state_dir)
    # The originals were on disk before the first write.
    saved = load_state(state_dir).members
    assert {a: m.original_driver for a, m in saved.items()} == {
        GPU: "nvidia",
        AUDIO: "snd_hda_intel",
    }

    kernel.crash_at = None  # the restarted agent
    result = await bind_group(
        kernel.root, GPU, state_dir=state_dir, dev_root=kernel.dev_root, writer=kernel.write
    )
    assert kernel.driver(GPU) == kernel.driver(AUDIO) == "vfio-pci"
    assert result.members == [GPU, AUDIO]

    await release(kernel, GPU, state_dir)
    assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nvidia", "snd_hda_intel")
    assert kernel.override(GPU) == kernel.override(AUDIO) == "(null)"


@pytest.mark.parametrize("crash_at", range(BIND_WRITES))
async def test_release_undoes_an_interrupted_bind(
    make_kernel: MakeKernel, state_dir: Path, crash_at: int
) -> None:
    kernel = gpu_with_audio(make_kernel, crash_at=crash_at)
    with pytest.raises(SimulatedCrash):
        await bind(kernel, GPU, state_dir)
    kernel.crash_at = None
    await release(kernel, GPU, state_dir)
    assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nvidia", "snd_hda_intel")
    assert kernel.override(GPU) == kernel.override(AUDIO) == "(null)"
    assert load_state(state_dir).members == {}


@pytest.mark.parametrize("crash_at", range(BIND_WRITES))
async def test_release_resumes_after_a_crash(
    make_kernel: MakeKernel, state_dir: Path, crash_at: int
) -> None:
    kernel = gpu_with_audio(make_kernel)
    await bind(kernel, GPU, state_dir)
    kernel.crash_at = len(kernel.writes) + crash_at
    with pytest.raises(SimulatedCrash):
        await release(kernel, GPU, state_dir)
    kernel.crash_at = None
    await release(kernel, GPU, state_dir)
    assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nvidia", "snd_hda_intel")
    assert load_state(state_dir).members == {}


async def test_half_bound_state_from_a_previous_agent(
    make_kernel: MakeKernel, state_dir: Path
) -> None:
    """The GPU is already on vfio-pci and the state file says it came from nvidia: a new
    bind finishes the audio function, and release gives the GPU back to nvidia."""
    prebound = FakePci(GPU, driver="vfio-pci", default_driver="nvidia", group=12)
    kernel = make_kernel([prebound, gpu_audio(AUDIO, 12)])
    state_dir.mkdir()  # noqa: ASYNC240 -- test setup
    (state_dir / STATE_FILE).write_text(
        json.dumps(
            {
                "version": 1,
                "members": {
                    GPU: {"iommu_group": 12, "original_driver": "nvidia", "requested_for": GPU},
                    AUDIO: {
                        "iommu_group": 12,
                        "original_driver": "snd_hda_intel",
                        "requested_for": GPU,
                    },
                },
            }
        )
    )
    result = await bind_group(
        kernel.root, GPU, state_dir=state_dir, dev_root=kernel.dev_root, writer=kernel.write
    )
    assert result.newly_bound == [AUDIO]
    assert kernel.writes_for(GPU) == []

    released = await release_group(kernel.root, GPU, state_dir=state_dir, writer=kernel.write)
    assert released.restored == {GPU: "nvidia", AUDIO: "snd_hda_intel"}
    assert (kernel.driver(GPU), kernel.driver(AUDIO)) == ("nvidia", "snd_hda_intel")

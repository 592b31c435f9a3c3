import os
import platform

import pytest
import torch

from resonate.device import needs_fixed_shapes, pick_device, release_free_memory, tune_allocator
from resonate.errors import ResonateError


def test_pick_device_cpu_and_unknown():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in {"cpu", "cuda", "mps"}
    with pytest.raises(ResonateError, match="unknown device"):
        pick_device("tpu")
    assert needs_fixed_shapes(torch.device("mps")) and not needs_fixed_shapes(torch.device("cpu"))


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"),
                    reason="the allocator tuning is for glibc only")
def test_tune_allocator_applies_on_glibc_and_is_idempotent():
    import resonate.device as device

    assert tune_allocator() is True
    assert device._allocator_tuned and tune_allocator() is True
    # Large allocations still work and are reusable after the change.
    a = torch.empty(64 << 20, dtype=torch.uint8)
    del a
    assert torch.empty(64 << 20, dtype=torch.uint8).numel() == 64 << 20


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0].startswith("glibc"),
                    reason="malloc_trim is glibc's")
def test_release_free_memory_gives_back_what_the_tuned_allocator_keeps():
    import numpy as np

    assert tune_allocator() is True
    block = np.ones(200 << 20, dtype=np.uint8)   # touched, so resident
    del block
    kept = _rss_mb()
    assert release_free_memory() is True
    assert _rss_mb() < kept - 100

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


def test_model_thread_runs_calls_on_one_other_thread_and_passes_errors_back():
    import threading

    from resonate.device import ModelThread

    with ModelThread("cpu") as worker:
        idents = {worker.run(threading.get_ident) for _ in range(3)}
        assert len(idents) == 1 and threading.get_ident() not in idents
        with pytest.raises(ValueError, match="bad chunk"):
            worker.run(lambda: (_ for _ in ()).throw(ValueError("bad chunk")))
        assert worker.run(lambda a, b: a + b, 2, 3) == 5
    # Closed, or on a GPU device: the call runs where it is made.
    assert worker.run(threading.get_ident) == threading.get_ident()
    with ModelThread("cuda") as gpu:
        assert gpu.run(threading.get_ident) == threading.get_ident()

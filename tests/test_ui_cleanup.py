"""Cleanup never deletes what Resonate did not make: the stem cache only removes marked entries."""

from __future__ import annotations

import os
import time

import numpy as np

from resonate.separation.cache import (
    MARKER,
    StemCacheWriter,
    cache_size_bytes,
    clear_cache,
    enforce_cap,
    lookup,
)


def _entry(cache, key: str, frames: int = 1000) -> None:
    w = StemCacheWriter(cache, key, ["a", "b"], 2, {"fingerprint": "x"})
    w.write(np.ones((2, 2, frames), dtype=np.float32))
    w.commit()


def _lookalike(cache, name: str) -> None:
    """A user's folder that happens to look like a cache entry (64 hex digits, even a meta.json)."""
    folder = cache / name
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text('{"stems": ["a"], "channels": 2, "frames": 1}')
    (folder / "a.f32").write_bytes(b"\0" * 8)
    old = time.time() - 3 * 24 * 3600
    os.utime(folder, (old, old))
    os.utime(folder / "meta.json", (old, old))


def test_clear_and_eviction_delete_only_marked_entries(tmp_path):
    cache = tmp_path / "my music"
    ours = "a" * 64
    _entry(cache, ours)
    assert (cache / ours / MARKER).is_file()
    theirs, their_partial = "b" * 64, "c" * 64 + ".partial-0123abcd"
    _lookalike(cache, theirs)
    _lookalike(cache, their_partial)

    assert lookup(cache, theirs) is None                       # never read as ours either
    assert cache_size_bytes(cache) == 2 * 1000 * 2 * 4 + (cache / ours / "meta.json").stat().st_size \
        + (cache / ours / MARKER).stat().st_size
    assert enforce_cap(cache, 0) > 0                           # evicts everything it may...
    assert not (cache / ours).exists()
    assert (cache / theirs / "a.f32").is_file() and (cache / their_partial / "a.f32").is_file()

    _entry(cache, ours)
    assert clear_cache(cache) > 0 and not (cache / ours).exists()
    assert (cache / theirs / "a.f32").is_file() and (cache / their_partial / "a.f32").is_file()


def test_an_unmarked_folder_under_an_entry_name_is_not_replaced(tmp_path):
    cache = tmp_path / "cache"
    key = "d" * 64
    _lookalike(cache, key)
    _entry(cache, key)
    assert sorted(p.name for p in (cache / key).iterdir()) == ["a.f32", "meta.json"]
    assert [p.name for p in cache.iterdir()] == [key]         # the partial folder is gone

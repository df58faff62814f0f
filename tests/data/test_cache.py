"""VolumeCache: a byte bound, least recently used first out, workers start empty."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from agcl.data import PreparedCases, VolumeCache, nbytes_of


def test_lru_within_the_byte_limit():
    cache = VolumeCache(max_bytes=1000)
    loads = []

    def arr(n, tag):
        def load():
            loads.append(tag)
            return np.zeros(n, np.uint8)

        return load

    cache.get("a", arr(400, "a"))
    cache.get("b", arr(400, "b"))
    cache.get("a", arr(400, "a"))  # hit: "a" becomes most recent
    cache.get("c", arr(400, "c"))  # 1200 > 1000: "b" (least recent) goes
    assert list(cache) == ["a", "c"] and cache.nbytes == 800 and loads == ["a", "b", "c"]
    big = cache.get("d", arr(2000, "d"))  # larger than the limit: returned, not kept
    assert big.nbytes == 2000 and "d" not in cache and cache.nbytes == 800
    assert (cache.hits, cache.misses) == (1, 4)
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_zero_keeps_nothing_and_pickle_is_empty():
    cache = VolumeCache(0)
    cache.get(1, lambda: np.zeros(3))
    assert len(cache) == 0
    full = VolumeCache(10**6)
    full.get(1, lambda: np.zeros(3))
    copy = pickle.loads(pickle.dumps(full))
    assert len(copy) == 0 and copy.max_bytes == 10**6
    with pytest.raises(ValueError, match="max_bytes"):
        VolumeCache(-1)


def test_nbytes_walks_containers_and_skips_broadcast_views():
    view = np.broadcast_to(np.zeros((), np.float32), (100, 100))
    assert nbytes_of(view) == 4
    assert (
        nbytes_of({"a": np.zeros(5, np.int16), "b": [np.zeros(2, np.float64), "x"], "c": None})
        == 26
    )


def test_prepared_cases_load_on_access(tmp_path):
    from agcl.data import build_cohort
    from agcl.data.synthetic import write_btcv_like

    cohort = build_cohort(
        write_btcv_like(tmp_path, 1, shape=(24, 24, 6), spacing=(5.0, 5.0, 10.0), seed=0)
    )
    pairs = list(cohort)
    cache = VolumeCache(10**9)
    cases = PreparedCases([c for c, _ in pairs], [m for _, m in pairs], cache=cache)
    first = cases[0]
    assert cases[0] is first and len(cache) == 1  # cached
    assert first.label.dtype == np.uint8 and first.image.dtype == np.float32
    assert first.reference.shape == first.image.shape and nbytes_of(first.reference.array) == 4
    uncached = PreparedCases([c for c, _ in pairs], [m for _, m in pairs])
    assert uncached[-1] is not uncached[-1]
    with pytest.raises(IndexError, match="index"):
        uncached[len(pairs)]

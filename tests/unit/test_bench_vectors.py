"""The vector benchmark's recall computation (bench/vectors.py), on tiny data; no timing asserts."""

from __future__ import annotations

import pytest

from bench import vectors


def test_recall_counts_the_overlap_with_the_exact_answer():
    exact = [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert vectors.recall_at_k([[0, 1, 2, 3], [7, 6, 5, 4]], exact, k=4) == 1.0  # order does not matter
    assert vectors.recall_at_k([[0, 1, 9, 9], [4, 5, 6, 8]], exact, k=4) == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert vectors.recall_at_k([[0, 0, 0, 0], []], exact, k=4) == pytest.approx((1 / 4 + 0) / 2)  # duplicates once
    assert vectors.recall_at_k([[9, 9, 9, 9, 0, 1, 2, 3], [4, 5, 6, 7]], exact, k=4) == 0.5  # past k: not counted


def test_recall_counts_a_tie_with_the_kth_neighbour():
    data = [[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]]
    query = [[1.0, 0.0]]
    exact = [[0, 1]]  # 2 is exactly as close as 1: either answer is right
    kth = [0.6]
    assert vectors.recall_at_k([[0, 2]], exact, data=data, queries=query, kth=kth, k=2) == 1.0
    assert vectors.recall_at_k([[0, 3]], exact, data=data, queries=query, kth=kth, k=2) == 0.5
    assert vectors.recall_at_k([[0, 2]], exact, k=2) == 0.5  # without the vectors, ids only


def _tiny(dataset: str):
    pytest.importorskip("numpy")
    return vectors.prepare(vectors.DATASETS[dataset](200, 12, dim=16))


@pytest.mark.parametrize("dataset", ["uniform", "clustered"])
def test_exact_top_k_matches_a_full_sort(dataset):
    ds = _tiny(dataset)
    import numpy as np

    for q, ids, kth in zip(ds.timed_queries, ds.exact, ds.kth):
        sims = ds.data @ q
        assert list(ids) == list(np.argsort(-sims, kind="stable")[: vectors.K])
        assert kth == pytest.approx(sims[ids[-1]])
    assert ds.data.shape == (200, 16) and ds.queries.shape == (vectors.WARMUP + 12, 16)
    assert np.allclose(np.linalg.norm(ds.data, axis=1), 1.0, atol=1e-5)


class _DropsTheNearest:
    """A store that answers like the wrapped one minus its nearest hit: recall (k-1)/k."""

    def __init__(self, store):
        self.store = store

    def __getattr__(self, name):
        return getattr(self.store, name)

    def search(self, *args, **kwargs):
        hits = self.store.search(*args, **kwargs)
        return hits[1:]


def test_harness_on_the_exact_reference_store(tmp_path):
    ds = _tiny("clustered")
    logged = []
    res = vectors.run_store(vectors.BY_NAME["in_memory"], ds, str(tmp_path), budget=600, log=logged.append)
    assert res["error"] is None and res["infeasible"] is None
    m = res["metrics"]
    assert m["recall"] == 1.0
    assert m["insert_rate"] > 0 and 0 < m["p50_ms"] <= m["p95_ms"]

    entry = vectors.StoreEntry("lossy", "in_memory", lambda where, name: (lambda s: (_DropsTheNearest(s), s.drop))(
        vectors.BY_NAME["in_memory"].build(where, name)[0]))
    res = vectors.run_store(entry, ds, str(tmp_path), budget=600, log=logged.append)
    assert res["error"] is None
    assert res["metrics"]["recall"] == pytest.approx((vectors.K - 1) / vectors.K)


def test_a_failing_store_is_reported_not_raised(tmp_path):
    ds = _tiny("uniform")

    def broken(where, name):
        raise RuntimeError("no such engine")

    res = vectors.run_store(vectors.StoreEntry("broken", "in_memory", broken), ds, str(tmp_path), budget=600,
                            log=lambda _: None)
    assert "no such engine" in res["error"] and res["metrics"] == {}

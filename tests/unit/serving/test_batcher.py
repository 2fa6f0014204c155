"""Concurrent queries are scored in batches, with the same answers as one by one."""

from __future__ import annotations

import asyncio

from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import Query, VersionRecommender
from serving.batcher import Batcher
from training.pipeline import TrainResult


class CountingRecommender(VersionRecommender):
    calls: list[int]

    def recommend(self, queries):  # type: ignore[no-untyped-def, override]
        self.calls.append(len(queries))
        return super().recommend(queries)


def test_concurrent_queries_share_batches(trained: tuple[FileRegistry, TrainResult]) -> None:
    recommender = CountingRecommender(trained[0].load("production"))
    recommender.calls = []
    queries = [Query(tracks=[f"tr{i}", f"tr{i + 1}"], k=5 + i % 3) for i in range(40)]
    expected = [recommender.recommend([q])[0].tracks for q in queries]
    recommender.calls.clear()

    async def run() -> list[list[str]]:
        batcher = Batcher(max_batch=16)
        results = await asyncio.gather(*(batcher.recommend(recommender, q) for q in queries))
        await batcher.close()
        return [r.tracks for r in results]

    assert asyncio.run(run()) == expected
    assert sum(recommender.calls) == 40 and len(recommender.calls) < 40 and max(recommender.calls) <= 16


def test_a_failing_batch_fails_its_requests_only(trained: tuple[FileRegistry, TrainResult]) -> None:
    recommender = VersionRecommender(trained[0].load("production"))

    async def run() -> tuple[BaseException | None, list[str]]:
        batcher = Batcher()
        bad = asyncio.create_task(batcher.recommend(recommender, Query(k=0)))
        error = await asyncio.gather(bad, return_exceptions=True)
        good = await batcher.recommend(recommender, Query(tracks=["tr1"], k=3))
        await batcher.close()
        return error[0], good.tracks

    error, good = asyncio.run(run())
    assert error is not None and "k must be between" in str(error)
    assert len(good) == 3

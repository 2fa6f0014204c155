"""Announcements, retrain decisions and feedback merged into training data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recsys.data.idmap import IdMap
from recsys.data.interaction_table import Interactions, Lineage
from recsys.data.merge import with_feedback
from recsys.errors import ConfigurationError
from recsys.evaluation.split import continuation_split
from recsys.events.schemas import ModelEvent, ModelEventKind
from recsys.registry.announcer import announcer, deliver
from recsys.registry.manifest import MANIFEST_FILE
from recsys.registry.plan import Experiment
from recsys.registry.retrain_cut import Thresholds, feedback_cut, new_events, reason_to_retrain, request_id
from recsys.registry.store import FileRegistry
from tests.unit.test_registry import clone_version
from training.pipeline import TrainResult


def test_every_registry_change_is_announced_in_order(
    trained: tuple[FileRegistry, TrainResult], registry: FileRegistry
) -> None:
    heard: list[ModelEvent] = []
    registry.announce = heard.append
    source, _ = trained
    first = clone_version(source, registry, ndcg=0.2)
    registry.promote(first)
    second = clone_version(source, registry, ndcg=0.3)
    registry.set_experiment(Experiment(name="exp", treatment=second, share=0.05))
    registry.stop_experiment("exp")
    registry.promote(second)
    registry.rollback()
    assert [(e.kind, e.version) for e in heard] == [
        (ModelEventKind.REGISTERED, "2.1"),
        (ModelEventKind.PROMOTED, "2.1"),
        (ModelEventKind.REGISTERED, "2.2"),
        (ModelEventKind.ROLLOUT_CHANGED, "2.2"),
        (ModelEventKind.ROLLOUT_CHANGED, None),
        (ModelEventKind.PROMOTED, "2.2"),
        (ModelEventKind.ROLLED_BACK, "2.1"),
    ]
    assert heard[3].detail == {"experiment": "exp", "share": 0.05, "revision": 1}
    assert heard[-1].detail == {"rolled_back": "2.2"}


def test_an_announcement_that_fails_does_not_undo_the_change(
    trained: tuple[FileRegistry, TrainResult], registry: FileRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_event: ModelEvent) -> None:
        raise ConnectionError("broker away")

    registry.announce = broken
    version = clone_version(trained[0], registry, ndcg=0.2)
    registry.promote(version)
    assert registry.production() == version
    assert "not announced: broker away" in caplog.text


def test_announcers_are_chosen_by_scheme() -> None:
    assert announcer("") is None
    assert type(announcer("kafka://127.0.0.1:9")).__name__ == "KafkaAnnouncer"
    with pytest.raises(ConfigurationError, match="no announcer for carrier-pigeon://"):
        announcer("carrier-pigeon://roof")
    with pytest.raises(ConfigurationError, match="scheme://address"):
        announcer("127.0.0.1:9092")
    deliver(None, ModelEvent(kind=ModelEventKind.PROMOTED, version="2.1"))  # nowhere: fine


def test_retrain_decisions() -> None:
    assert request_id({0: 5, 1: 7}) == request_id({1: 7, 0: 5}) != request_id({0: 5, 1: 8})
    assert new_events({0: 5, 1: 7}, {0: 9, 1: 7, 2: 3}) == 4 + 0 + 3
    assert new_events({0: 5}, {0: 2}) == 0  # a cut past the end (a recreated topic) is not negative
    limits = Thresholds(min_events=100, max_age_s=3600)
    assert reason_to_retrain(99, 10.0, limits) is None
    assert "100 new feedback events" in (reason_to_retrain(100, None, limits) or "")
    assert "7200s old" in (reason_to_retrain(1, 7200.0, limits) or "")
    assert reason_to_retrain(0, 7200.0, limits) is None


def test_the_cut_is_the_newest_versions_feedback_offsets(
    trained: tuple[FileRegistry, TrainResult], registry: FileRegistry
) -> None:
    clone_version(trained[0], registry, ndcg=0.2)
    assert feedback_cut(registry) == {}
    folder = registry.folder("2.1")
    manifest = registry.manifest("2.1")
    manifest.lineage["feedback"] = {"end_offsets": {"0": 12, "1": 3}}
    (folder / MANIFEST_FILE).write_text(manifest.model_dump_json())
    assert feedback_cut(registry) == {0: 12, 1: 3}


def interactions(rows: list[str], items: list[str], pairs: list[tuple[int, int, float]]) -> Interactions:
    r, i, w = (np.array(x) for x in zip(*pairs, strict=True))
    return Interactions(
        r.astype(np.int32),
        i.astype(np.int32),
        w.astype(np.float32),
        IdMap(pa.array(rows)),
        IdMap(pa.array(items)),
        lineage=Lineage(
            paths=[f"{rows[0]}.parquet"], content_sha256=rows[0], rows_read=len(pairs), format="x"
        ),
    )


def test_feedback_rows_join_the_playlists_on_the_same_catalogue() -> None:
    base = interactions(["pl0", "pl1"], ["a", "b", "c"], [(0, 0, 1), (0, 1, 1), (1, 2, 1)])
    feedback = interactions(["u1", "u2"], ["c", "zz", "a"], [(0, 0, 4.0), (0, 1, 1.0), (1, 2, -4.0)])
    merged, counts = with_feedback(base, feedback)
    assert merged.item_ids.ids.to_pylist() == ["a", "b", "c"]
    assert merged.row_ids.ids.to_pylist() == ["pl0", "pl1", "user:u1", "user:u2"]
    dense = merged.to_csr().toarray()
    assert dense[2].tolist() == [0, 0, 4.0] and dense[3].tolist() == [-4.0, 0, 0]
    assert counts == {"listeners": 2, "feedback_pairs": 2, "unknown_track_pairs": 1}
    assert merged.lineage is not None and merged.lineage.paths == ["pl0.parquet", "u1.parquet"]


def test_the_experiment_gate_tolerates_a_small_offline_shortfall(
    trained: tuple[FileRegistry, TrainResult], registry: FileRegistry
) -> None:
    source, _ = trained
    registry.promote(clone_version(source, registry, ndcg=0.30))
    close = clone_version(source, registry, ndcg=0.297)
    far = clone_version(source, registry, ndcg=0.28)
    assert not registry.check_promotion(close).allowed
    assert registry.check_promotion(close, tolerance=0.02).allowed
    assert not registry.check_promotion(far, tolerance=0.02).allowed


def test_a_retraining_is_tested_on_the_base_datas_test_playlists(synth_data: Interactions) -> None:
    tracks = synth_data.item_ids.ids.to_pylist()[:30]
    feedback = interactions(["fan"], tracks, [(0, i, 1.0) for i in range(30)])
    merged, _ = with_feedback(synth_data, feedback)
    base = continuation_split(synth_data, seed=3)
    again = continuation_split(merged, seed=3, test_rows_below=synth_data.n_rows)
    assert np.array_equal(base.test_rows, again.test_rows)
    assert not np.array_equal(continuation_split(merged, seed=3).test_rows, base.test_rows)

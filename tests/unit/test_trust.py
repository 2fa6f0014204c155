"""Account trust: the age policy, dating accounts from an event log, the fit, and the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from recsys.data.formats import load
from recsys.data.interaction_table import Interactions
from recsys.models.als import ALSModel, ALSParams
from recsys.models.device import Device
from recsys.models.foldin import FoldIn
from recsys.registry.artifacts import load_version
from recsys.registry.store import FileRegistry
from recsys.scoring.recommender import VersionRecommender
from recsys.trust.accounts import assess
from recsys.trust.policy import DAY_MS, TrustParams, age_trust
from recsys.trust.simulation import Attack, attack_events, listener_events
from tests.conftest import FAST_PARAMS
from training.pipeline import TrainRequest, train
from training.settings import TrainingSettings

CUT = 1_767_225_600_000
OLD = CUT - 60 * DAY_MS


def test_age_ramp() -> None:
    ages = np.array([0.0, 6.9, 7.0, 18.5, 30.0, 400.0])
    assert age_trust(ages, TrustParams()).tolist() == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    step = TrustParams(min_age_days=7, full_age_days=7)
    assert age_trust(np.array([6.9, 7.0]), step).tolist() == [0.0, 1.0]
    with pytest.raises(ValidationError, match="at least min_age_days"):
        TrustParams(min_age_days=30, full_age_days=7)


def test_settings_tune_and_switch_off_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_TRUST__MIN_AGE_DAYS", "3")
    assert TrainingSettings().trust == TrustParams(min_age_days=3)
    monkeypatch.setenv("RECSYS_TRUST__ENABLED", "false")
    assert not TrainingSettings().trust.enabled


def write_log(folder: Path, rows: list[tuple[str, str, str, int, int]], *, received: bool = True) -> Path:
    """An event log of (user, track, type, ts, received_ms) rows."""
    users, tracks, kinds, ts, got = (list(c) for c in zip(*rows, strict=True))
    columns = {"user_id": users, "track_id": tracks, "type": kinds, "listen_ms": [210_000.0] * len(rows)}
    columns |= {"ts": ts} | ({"received_ms": got} if received else {})
    path = folder / "events.parquet"
    pq.write_table(pa.table(columns), path)
    return path


LOG = [
    ("old", "a", "complete", OLD, OLD),
    ("old", "b", "complete", CUT - DAY_MS, CUT - DAY_MS),
    # a new account whose client claims its events are 100 days old
    ("new", "a", "love", CUT - 100 * DAY_MS, CUT - 3600_000),
    ("new", "a", "complete", CUT - 100 * DAY_MS, CUT - 3600_000),
    ("new", "c", "complete", CUT - 100 * DAY_MS, CUT),
]


def test_accounts_are_dated_by_the_time_the_service_received_their_events(tmp_path: Path) -> None:
    events = load(write_log(tmp_path, LOG))
    trust = assess(events, TrustParams())
    by_user = dict(zip(events.row_ids.ids.to_pylist(), trust.trust.tolist(), strict=True))
    assert by_user == {"old": 1.0, "new": 0.0}
    summary = trust.summary()
    assert summary["applied"] and summary["clock"] == "received_ms"
    assert summary["cut"] == "2026-01-01T00:00:00+00:00"
    assert (summary["accounts"], summary["discounted_accounts"], summary["excluded_accounts"]) == (2, 1, 1)
    assert summary["feedback_weight"] == pytest.approx(2 + 6)  # old: two completes; new: love + 2 completes
    assert summary["discounted_weight"] == pytest.approx(6)
    assert summary["discounted_share"] == pytest.approx(0.75)
    assert trust.row_weights(3).tolist() == [1.0, 1.0, 1.0, *trust.trust.tolist()]


def test_a_log_without_receive_times_trusts_the_client_clock(tmp_path: Path) -> None:
    """Backdated client times then pass: the trainer's own log always has ``received_ms``."""
    events = load(write_log(tmp_path, LOG, received=False))
    trust = assess(events, TrustParams())
    assert trust.summary()["clock"] == "ts"
    assert trust.trust.tolist() == [1.0, 1.0]


def test_trust_not_applied(tmp_path: Path) -> None:
    events = load(write_log(tmp_path, LOG))
    disabled = assess(events, TrustParams(enabled=False))
    assert not disabled.discounts and disabled.summary() == {
        "policy": "account_age",
        "applied": False,
        "min_age_days": 7.0,
        "full_age_days": 30.0,
        "reason": "disabled",
    }
    csv = tmp_path / "no-times.csv"
    csv.write_text("user_id,track_id,type,listen_ms\nu1,a,complete,1000\n")
    untimed = assess(load(csv), TrustParams())
    assert not untimed.discounts and "no ts or received_ms" in untimed.summary()["reason"]


def test_discounted_rows_keep_their_own_vector(synth_data: Interactions) -> None:
    matrix = synth_data.to_csr()
    weights = np.ones(matrix.shape[0], np.float32)
    weights[:10], weights[10:20] = 0.0, 0.5
    model = ALSModel(ALSParams(factors=8, iterations=3, seed=1), device=Device.CPU)
    model.fit(matrix, row_weights=weights)
    assert model.confidence is not None and model.item_factors is not None
    assert model.user_factors is not None
    rows = np.arange(20)
    fold = FoldIn(model.item_factors, regularization=model.params.regularization, alpha=model.params.alpha)
    expected = fold.vectors(model.confidence.transform(matrix[rows]))
    np.testing.assert_allclose(model.user_factors[rows], expected, rtol=1e-4, atol=1e-6)
    assert np.abs(model.user_factors[:10]).sum() > 0  # not the zero vector of an empty row
    recommended = model.recommend(rows, matrix, 10)
    assert (recommended >= 0).all()
    with pytest.raises(ValueError, match="row weights"):
        model.fit(matrix, row_weights=weights[:-1])


def test_zero_weight_rows_do_not_shape_the_tracks(synth_data: Interactions) -> None:
    """Rows of weight 0 are as if absent for the track factors and the item-kNN."""
    matrix = synth_data.to_csr()
    junk = sp.csr_matrix(np.ones((5, matrix.shape[1]), np.float32))
    params = ALSParams(factors=8, iterations=3, seed=1, knn_neighbours=20)
    alone, padded = ALSModel(params, device=Device.CPU), ALSModel(params, device=Device.CPU)
    alone.fit(matrix)
    weights = np.r_[np.ones(matrix.shape[0], np.float32), np.zeros(5, np.float32)]
    padded.fit(sp.vstack([matrix, junk]).tocsr(), row_weights=weights)
    assert alone.knn is not None and padded.knn is not None
    assert (alone.knn.similarity != padded.knn.similarity).nnz == 0
    assert alone.confidence is not None and padded.confidence is not None
    assert alone.confidence.idf is not None and padded.confidence.idf is not None
    # IDF counts rows: only the row count differs, never the tracks' document frequencies
    shift = np.log(matrix.shape[0] + 5.0) - np.log(float(matrix.shape[0]))
    np.testing.assert_allclose(padded.confidence.idf - alone.confidence.idf, shift, atol=1e-6)


def test_training_records_what_trust_discounted(
    tmp_path: Path, synth_parquet: Path, synth_data: Interactions, registry: FileRegistry
) -> None:
    popularity = np.bincount(synth_data.items, minlength=synth_data.n_items)
    honest = listener_events(synth_data, np.arange(0, synth_data.n_rows, 4), cut_ms=CUT)
    fake = attack_events(
        Attack(accounts=20), target=5, popularity=popularity, item_ids=synth_data.item_ids, cut_ms=CUT
    )
    log = tmp_path / "feedback.parquet"
    pq.write_table(pa.concat_tables([honest, fake]), log)
    request = TrainRequest(data=synth_parquet, feedback=log, params=FAST_PARAMS, device=Device.CPU)
    manifest = train(request, registry).manifest
    trust = manifest.lineage["trust"]
    assert trust["applied"] and trust["clock"] == "received_ms" and trust["accounts"] == 100 + 20
    assert trust["excluded_accounts"] >= 20 and trust["discounted_accounts"] >= trust["excluded_accounts"]
    assert 0 < trust["discounted_weight"] < trust["feedback_weight"]
    assert manifest.lineage["feedback"]["listeners"] == 120
    version = load_version(registry.folder(manifest.version))
    held = np.bincount(version.row_items.indices, minlength=len(version.item_ids))
    assert version.popularity is not None  # the most-popular fallback does not count fake accounts
    assert held[5] - version.popularity[5] >= 20
    fallback = VersionRecommender(version).popular
    assert np.array_equal(fallback, np.argsort(-version.popularity, kind="stable"))
    off = TrainRequest(
        data=synth_parquet,
        feedback=log,
        params=FAST_PARAMS,
        device=Device.CPU,
        evaluate=False,
        trust=TrustParams(enabled=False),
    )
    assert train(off, registry).manifest.lineage["trust"]["reason"] == "disabled"

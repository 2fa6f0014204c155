"""The speed layer's vector is the fold-in of the listener's feedback against production."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.feedback import HATE_WEIGHT, LOVE_WEIGHT, PLAY_WEIGHT
from recsys.models.foldin import FoldIn
from recsys.registry import FileRegistry
from streams.speed import SpeedLayer
from training.pipeline import TrainResult


def test_vector_hates_and_model_version(trained: tuple[FileRegistry, TrainResult]) -> None:
    registry, _ = trained
    speed = SpeedLayer(registry)
    assert speed.updates_for([("u", {"loved": ["tr1"]}, None)])[0].vector is None  # no model loaded yet
    speed.refresh()
    model = registry.load("production")
    tracks = model.item_ids.externals(np.array([0, 1, 2]))
    state = {"loved": [tracks[0]], "recent": [tracks[1], tracks[0]], "hated": [tracks[2]]}
    other = {"recent": [tracks[1]]}
    update, lone_hate, second = speed.updates_for(
        [("u", state, None), ("v", {"hated": [tracks[2]]}, None), ("w", other, None)]
    )
    assert update.model_version == model.version and update.hated == [tracks[2]]
    row = sp.csr_matrix(
        (np.array([LOVE_WEIGHT + PLAY_WEIGHT, PLAY_WEIGHT, HATE_WEIGHT], np.float32), [0, 1, 2], [0, 3]),
        shape=(1, len(model.item_ids)),
    )
    params = model.manifest.params
    expected = FoldIn(
        model.item_factors, regularization=params["regularization"], alpha=params["alpha"]
    ).vectors(model.confidence.transform(row))[0]
    assert update.vector is not None
    np.testing.assert_allclose(update.vector, expected, rtol=1e-5, atol=1e-6)
    assert lone_hate.vector is None and lone_hate.hated == [tracks[2]]  # only dislikes: nothing to fold in
    alone = speed.updates_for([("w", other, None)])[0]  # one solve for many gives each its own answer
    assert second.user_id == "w" and second.vector is not None and alone.vector is not None
    np.testing.assert_allclose(second.vector, alone.vector, rtol=1e-5, atol=1e-6)

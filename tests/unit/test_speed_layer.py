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
    assert speed.update_for("u", {"loved": ["tr1"]}).vector is None  # no model loaded yet
    speed.refresh()
    model = registry.load("production")
    tracks = model.item_ids.externals(np.array([0, 1, 2]))
    state = {"loved": [tracks[0]], "recent": [tracks[1], tracks[0]], "hated": [tracks[2]]}
    update = speed.update_for("u", state)
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
    assert speed.update_for("u", {"hated": [tracks[2]]}).vector is None  # only dislikes: nothing to fold in

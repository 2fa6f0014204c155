"""A model version on disk: write its files, verify their checksums, load it for scoring.

Layout of a version folder::

    manifest.json         Manifest (written last; lists the sha256 of every other file)
    item_factors.npy      float32 [tracks, factors]
    row_factors.npy       float32 [playlists/users, factors]
    row_items.npz         CSR of each trained playlist's tracks (to exclude them)
    items.arrow           track id map (+ title, artist, duration_ms when known)
    rows.arrow            playlist/user id map
    confidence.npz        the input weighting (BM25 IDF, mean length), for fold-in
    item_factors_q8.npy   int8 [factors, tracks] copy of the item factors, for the graph's first pass
    scoring.onnx          scoring graph; its weights point into both factor files
    item_similarity.*.npy item-kNN neighbour weights as CSR (indptr, indices, data; memory-mapped
                          at load), when the model blends with kNN
    item_index.faiss      HNSW index of the item factors, for large catalogues (recsys.scoring.ann)
    track_popularity.npy  float32 [tracks]: rows holding each track, weighted by account trust
                          (the most-popular fallback), when trust discounted some listeners
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import scipy.sparse as sp

from recsys.data.idmap import IdMap
from recsys.data.lineage import file_sha256
from recsys.errors import ArtifactCorrupt
from recsys.models.confidence import Confidence
from recsys.registry.manifest import MANIFEST_FILE, Manifest

ITEM_FACTORS, ROW_FACTORS, ROW_ITEMS = "item_factors.npy", "row_factors.npy", "row_items.npz"
QUANTIZED_FACTORS = "item_factors_q8.npy"
"""The int8 item factors the scoring graph scans (written by its exporter)."""
ITEMS, ROWS, CONFIDENCE, SCORING = "items.arrow", "rows.arrow", "confidence.npz", "scoring.onnx"
SIMILARITY, INDEX_FILE, POPULARITY = "item_similarity.npz", "item_index.faiss", "track_popularity.npy"
"""``SIMILARITY`` is the older single-file form of the similarity; still read."""
SIMILARITY_PARTS = tuple(f"item_similarity.{part}.npy" for part in ("indptr", "indices", "data"))
REQUIRED_FILES = (ITEM_FACTORS, QUANTIZED_FACTORS, ROW_FACTORS, ROW_ITEMS, ITEMS, ROWS, CONFIDENCE, SCORING)


@dataclass
class ModelParts:
    """What a trained model contributes to a version folder."""

    item_factors: np.ndarray
    row_factors: np.ndarray
    row_items: sp.csr_matrix
    item_ids: IdMap
    row_ids: IdMap
    confidence: Confidence
    track_meta: pa.Table | None = None
    similarity: sp.csr_matrix | None = None
    ann_index: Path | None = None
    """An HNSW index file of the item factors (moved into the version folder when written)."""
    popularity: np.ndarray | None = None
    """Rows holding each track, weighted by account trust (:mod:`recsys.trust`); ``None``: every
    row of ``row_items`` counts fully."""


class GraphExporter(Protocol):
    """Writes a version's scoring graph (``SCORING``, with ``QUANTIZED_FACTORS``) from its item factors."""

    def __call__(self, path: Path, item_factors_path: Path, *, n_items: int, factors: int) -> None: ...


def write_version(
    folder: Path, parts: ModelParts, manifest: Manifest, export_graph: GraphExporter
) -> Manifest:
    """Write every file of a version into ``folder``, then the manifest with their checksums.

    ``export_graph`` writes the scoring graph (:func:`recsys.scoring.onnx_graph.export_scoring_graph`):
    the format of a version sits below the code that scores with it, so the writer is passed in.
    """
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / ITEM_FACTORS, np.ascontiguousarray(parts.item_factors, dtype=np.float32))
    np.save(folder / ROW_FACTORS, np.ascontiguousarray(parts.row_factors, dtype=np.float32))
    row_items = parts.row_items.tocsr()
    np.savez(
        folder / ROW_ITEMS,
        indptr=row_items.indptr.astype(np.int64),
        indices=row_items.indices.astype(np.int32),
    )
    _write_items(folder / ITEMS, parts.item_ids, parts.track_meta)
    parts.row_ids.save(folder / ROWS)
    parts.confidence.save(folder / CONFIDENCE)
    n_items, factors = parts.item_factors.shape
    export_graph(folder / SCORING, folder / ITEM_FACTORS, n_items=n_items, factors=factors)
    names = list(REQUIRED_FILES)
    if parts.similarity is not None:
        _save_similarity(folder, parts.similarity)
        names.extend(SIMILARITY_PARTS)
    if parts.ann_index is not None:
        shutil.move(parts.ann_index, folder / INDEX_FILE)
        names.append(INDEX_FILE)
    if parts.popularity is not None:
        np.save(folder / POPULARITY, np.asarray(parts.popularity, dtype=np.float32))
        names.append(POPULARITY)
    manifest.files = {name: sha256(folder / name) for name in names}
    _fsync_write(folder / MANIFEST_FILE, manifest.model_dump_json(indent=2).encode())
    return manifest


def _save_similarity(folder: Path, matrix: sp.csr_matrix) -> None:
    """One ``.npy`` per CSR array, int32 indices where they fit, so loading can memory-map them."""
    matrix = matrix.tocsr()
    index_type = np.int32 if max(matrix.nnz, matrix.shape[1]) < np.iinfo(np.int32).max else np.int64
    for name, array in zip(
        SIMILARITY_PARTS,
        (matrix.indptr.astype(index_type), matrix.indices.astype(index_type), matrix.data.astype(np.float32)),
        strict=True,
    ):
        np.save(folder / name, array)


def _load_similarity(folder: Path, manifest: Manifest) -> sp.csr_matrix | None:
    """The similarity, memory-mapped (nothing is copied: a version swaps in quickly)."""
    if SIMILARITY in manifest.files:
        return _load_csr(folder / SIMILARITY)
    if SIMILARITY_PARTS[0] not in manifest.files:
        return None
    indptr, indices, data = (np.load(folder / name, mmap_mode="r") for name in SIMILARITY_PARTS)
    n = manifest.shapes.items
    return sp.csr_matrix((data, indices, indptr), shape=(n, n), copy=False)


def _load_csr(path: Path) -> sp.csr_matrix:
    with np.load(path, allow_pickle=False) as z:
        return sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))


def _write_items(path: Path, item_ids: IdMap, meta: pa.Table | None) -> None:
    columns = {"id": item_ids.ids}
    if meta is not None:
        for name in ("title", "artist", "duration_ms"):
            if name in meta.column_names:
                columns[name] = meta.column(name).combine_chunks()
    table = pa.table(columns)
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _fsync_write(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def sha256(path: Path, *, max_bytes_per_s: float | None = None) -> str:
    """sha256 of a file (the same digest data lineage records)."""
    return file_sha256(path, max_bytes_per_s=max_bytes_per_s)


def read_manifest(folder: Path) -> Manifest:
    """Parse a version's manifest; a missing or invalid one is :class:`ArtifactCorrupt`."""
    try:
        return Manifest.model_validate_json((folder / MANIFEST_FILE).read_bytes())
    except FileNotFoundError as exc:
        raise ArtifactCorrupt(f"{folder}: no {MANIFEST_FILE}") from exc
    except ValueError as exc:
        raise ArtifactCorrupt(f"{folder}: invalid {MANIFEST_FILE} ({exc})") from exc


def verify(
    folder: Path, manifest: Manifest | None = None, *, max_bytes_per_s: float | None = None
) -> Manifest:
    """Check every file against the manifest's sha256; raise :class:`ArtifactCorrupt` on any mismatch.

    ``max_bytes_per_s`` paces the reading (background verification on a busy server).
    """
    manifest = manifest or read_manifest(folder)
    missing = [name for name in REQUIRED_FILES if name not in manifest.files]
    if missing:
        raise ArtifactCorrupt(f"{folder}: manifest lists no checksum for {', '.join(missing)}")
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactCorrupt(f"model {manifest.version}: {name} is missing")
        if sha256(path, max_bytes_per_s=max_bytes_per_s) != expected:
            raise ArtifactCorrupt(
                f"model {manifest.version}: {name} fails its checksum (file changed or truncated)"
            )
    return manifest


@dataclass(kw_only=True)
class LoadedModel(ModelParts):
    """A verified version, ready to score: its parts, where they live, and its manifest."""

    folder: Path
    manifest: Manifest

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def scoring_graph(self) -> Path:
        return self.folder / SCORING

    def mapped_arrays(self) -> list[np.ndarray]:
        """The large arrays read from the version's files by mapping them (:mod:`..scoring.memory_pages`)."""
        arrays = [self.item_factors, self.row_factors]
        if self.similarity is not None:
            arrays += [self.similarity.indptr, self.similarity.indices, self.similarity.data]
        return arrays


def load_version(folder: Path, *, check: bool = True, max_bytes_per_s: float | None = None) -> LoadedModel:
    """Load a version folder, verifying checksums first unless ``check`` is false."""
    manifest = verify(folder, max_bytes_per_s=max_bytes_per_s) if check else read_manifest(folder)
    try:
        items = _read_arrow(folder / ITEMS)
        with np.load(folder / ROW_ITEMS, allow_pickle=False) as z:
            indptr, indices = z["indptr"], z["indices"]
        item_factors = np.load(folder / ITEM_FACTORS, mmap_mode="r")
        row_factors = np.load(folder / ROW_FACTORS, mmap_mode="r")
        row_items = sp.csr_matrix(
            (_ones(len(indices)), indices, indptr),
            shape=(row_factors.shape[0], item_factors.shape[0]),
            copy=False,
        )
        loaded = LoadedModel(
            folder=folder,
            manifest=manifest,
            item_factors=item_factors,
            row_factors=row_factors,
            row_items=row_items,
            item_ids=IdMap(items.column("id").combine_chunks()),
            row_ids=IdMap.load(folder / ROWS),
            confidence=Confidence.load(folder / CONFIDENCE),
            track_meta=items,
            similarity=_load_similarity(folder, manifest),
            ann_index=folder / INDEX_FILE if INDEX_FILE in manifest.files else None,
            popularity=np.load(folder / POPULARITY) if POPULARITY in manifest.files else None,
        )
    except (OSError, ValueError, KeyError, pa.ArrowInvalid) as exc:
        raise ArtifactCorrupt(f"model {manifest.version}: unreadable files ({exc})") from exc
    _check_shapes(loaded)
    return loaded


def _ones(n: int) -> np.ndarray:
    """``n`` read-only ones that take no memory (one value, stride 0).

    The values of a loaded playlist-track matrix are all 1 and never written; a real array
    of them is 264 MB at Million Playlist scale, allocated by each version a server loads
    and freed by each it retires.
    """
    return np.broadcast_to(np.float32(1.0), (n,))


def _read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path), "r") as source:
        return ipc.open_file(source).read_all()


def _check_shapes(model: LoadedModel) -> None:
    s = model.manifest.shapes
    if model.item_factors.shape != (s.items, s.factors) or model.row_factors.shape != (
        s.rows,
        s.factors,
    ):
        raise ArtifactCorrupt(f"model {model.version}: array shapes disagree with the manifest")
    if len(model.item_ids) != s.items or len(model.row_ids) != s.rows:
        raise ArtifactCorrupt(f"model {model.version}: id maps disagree with the manifest")


def manifest_json(manifest: Manifest) -> str:
    """Pretty JSON of a manifest, for the CLI."""
    return json.dumps(json.loads(manifest.model_dump_json()), indent=2)

"""The ONNX scoring graph of a model version: a certified-exact blended top-k in one run.

Inputs (``batch`` rows):

- ``user`` float32 ``[batch, factors]``: playlist vectors.
- ``exclude`` int64 ``[batch, n]``: track indices that are never returned.
- ``candidates`` int64 ``[batch, m]`` and ``candidate_scores`` float32 ``[batch, m]``:
  tracks with an item-kNN score (raw; a score of ``-1`` marks padding).
- ``weight`` float32 ``[1]``: the kNN share ``w`` of the blend (0 for plain ALS).
- ``k`` int64 ``[1]``, and ``shortlist`` int64 ``[1]`` (at least ``k``).

Index rows are padded by repeating one of the row's own entries; a row with no entries
at all is ``-1`` throughout. A track scores ``(1 - w) · als / |max als| + w · knn / max knn``
(maxima over the row's allowed tracks, floored at :data:`recsys.models.blend.EPS`), or its
raw ALS dot product when ``w = 0``: :func:`recsys.models.blend.blend_scores` in ONNX operators.

How: the catalogue is scored approximately with int8 item factors (a quarter of the
bytes of float32, so 200k x 64 stays in a CPU's last-level cache). The ``shortlist`` best
non-candidate tracks by that score, the ``shortlist`` best kNN candidates by an
approximate blended score and the :data:`PEAK_PICKS` best other candidates by approximate
ALS score are rescored exactly in float32, and the best ``k`` of those are returned. The
outputs let the caller prove a row exact, with ``bound`` the quantization error bound
(:func:`recsys.scoring.topk.quantization_bound`):

- ``threshold``: the smallest approximate score in the shortlist; every other
  non-candidate track scores at most ``threshold + bound`` in ALS;
- ``rest_als``: the best approximate ALS score of the candidates not rescored (at most
  ``rest_als + bound`` exactly);
- ``peak``: the best exact ALS score found, the blend's normaliser, right when nothing
  left out can beat it;
- ``scale``: the ALS factor of the blend;
- ``rest_blend``: the best approximate blended score of the candidates not rescored
  (at most ``rest_blend + scale · bound`` exactly).

Rows it cannot prove are scored again exactly (:class:`recsys.scoring.topk.OnnxScorer` does
both). Gathering only the picked candidates' float32 factors, not all of them (a few
thousand rows for 20 seed tracks, each a cache miss), is what keeps the graph short.

On a GPU the int8 pass is replaced by a float32 ``Gemm`` over the whole catalogue
(``scan="float32"``; onnxruntime's CUDA provider has no int8 ``MatMulInteger``, and the
GPU's memory bandwidth makes the full-precision pass cheap); the shortlist, the exact
rescoring and the proof stay the same, with a float32 rounding bound in place of the
quantization bound.

The factors are not copied into the graph: the initializers point into the version's
item factor files (:data:`~recsys.registry.artifacts.ITEM_FACTORS` and
:data:`~recsys.registry.artifacts.QUANTIZED_FACTORS`) as ONNX external data (offset past the
``.npy`` header). Opset 17 / IR 8, standard operators only (onnxruntime fuses the int8
product into one kernel).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper

from recsys.models.blend import EPS
from recsys.registry.artifacts import ITEM_FACTORS, QUANTIZED_FACTORS

OPSET = 17
IR_VERSION = 8
GRAPH_FORMAT = "3"
"""Stored in the graph's metadata; scorers refuse formats outside :data:`READABLE_FORMATS`."""
READABLE_FORMATS = ("2", "3")
"""Format 2 graphs are rebuilt in the current format when loaded (:func:`.topk.graph_source`)."""
FORMAT_KEY, Q8_SCALE_KEY, ROW_L1_KEY = "recsys.graph_format", "recsys.q8_scale", "recsys.max_row_l1"
SCAN_KEY = "recsys.scan"
SCAN_CHUNK = 16_384
"""Row length of the float32 scan's first TopK pass (catalogues up to this take one pass)."""
PEAK_PICKS = 32
"""kNN candidates rescored exactly for their approximate ALS score alone (see :func:`_pick_candidates`)."""
Scan = Literal["int8", "float32"]
"""Precision of the pass over the whole catalogue: int8 on a CPU, float32 on a GPU."""
INPUT_USER, INPUT_EXCLUDE, INPUT_K, INPUT_SHORTLIST = "user", "exclude", "k", "shortlist"
INPUT_CANDIDATES, INPUT_CANDIDATE_SCORES, INPUT_WEIGHT = "candidates", "candidate_scores", "weight"
OUTPUT_SCORES, OUTPUT_INDICES = "scores", "indices"
OUTPUT_THRESHOLD, OUTPUT_PEAK, OUTPUT_SCALE = "threshold", "peak", "scale"
OUTPUT_REST_ALS, OUTPUT_REST_BLEND = "rest_als", "rest_blend"


def npy_data_offset(path: Path) -> int:
    """Byte offset of the array data in a ``.npy`` file (after its header)."""
    with path.open("rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        )
        read_header(fh)
        return fh.tell()


def quantize(item_factors: np.ndarray) -> tuple[np.ndarray, float]:
    """Symmetric int8 factors, transposed to ``[factors, tracks]``, and their scale."""
    peak = float(np.abs(item_factors).max(initial=0.0))
    scale = peak / 127 if peak > 0 else 1.0
    q = np.clip(np.rint(np.asarray(item_factors, dtype=np.float32) / scale), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q.T), scale


def _external(path: Path, name: str, dtype: int, dims: list[int], itemsize: int) -> TensorProto:
    tensor = TensorProto()
    tensor.name, tensor.data_type, tensor.data_location = name, dtype, TensorProto.EXTERNAL
    tensor.dims.extend(dims)
    for key, value in (
        ("location", path.name),
        ("offset", str(npy_data_offset(path))),
        ("length", str(int(np.prod(dims)) * itemsize)),
    ):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _padded(name: str, prefix: str) -> list[onnx.NodeProto]:
    """``{prefix}_idx`` (``-1`` mapped to 0) and ``{prefix}_valid`` of an index input."""
    return [
        helper.make_node("GreaterOrEqual", [name, "zero_i"], [f"{prefix}_valid"]),
        helper.make_node("Max", [name, "zero_i"], [f"{prefix}_idx"]),
    ]


def _scan(scan: Scan) -> list[onnx.NodeProto]:
    """``approx``: every track's ALS score, from int8 factors or in float32, over ``row_scale``.

    The int8 pass quantizes each user vector divided by its largest magnitude, so that one
    quantization scale fits every row of the batch (``DynamicQuantizeLinear`` has one per
    tensor); the scores keep that per-row factor (``row_scale``), which no ranking needs.
    """
    n = helper.make_node
    if scan == "float32":
        return [
            n("Gemm", [INPUT_USER, "item_factors"], ["approx"], transB=1),
            n("Identity", ["one"], ["row_scale"]),
        ]
    return [
        n("Abs", [INPUT_USER], ["user_abs"]),
        n("ReduceMax", ["user_abs"], ["user_peak"], axes=[1], keepdims=1),
        n("Max", ["user_peak", "eps"], ["row_scale"]),
        n("Div", [INPUT_USER, "row_scale"], ["user_unit"]),
        n("DynamicQuantizeLinear", ["user_unit"], ["uq", "u_scale", "u_zero"]),
        n("MatMulInteger", ["uq", "item_factors_q8", "u_zero", "zero_i8"], ["acc"]),
        n("Cast", ["acc"], ["acc_f"], to=TensorProto.FLOAT),
        n("Mul", ["u_scale", "q8_scale"], ["approx_scale"]),
        n("Mul", ["acc_f", "approx_scale"], ["approx"]),
    ]


def _shortlist() -> list[onnx.NodeProto]:
    """``allowed``: ``approx`` with exclusions at -inf; ``als_only``: candidates hidden too.

    The shortlist of ``als_only`` is taken by :func:`_topk_whole_rows` or :func:`_topk_in_chunks`.
    """
    n = helper.make_node
    return [
        *_padded(INPUT_EXCLUDE, "ex"),
        *_padded(INPUT_CANDIDATES, "cand"),
        n("GatherElements", ["approx", "ex_idx"], ["approx_at_ex"], axis=1),
        n("Where", ["ex_valid", "neg_inf", "approx_at_ex"], ["ex_update"]),
        n("ScatterElements", ["approx", "ex_idx", "ex_update"], ["allowed"], axis=1),
        n("GatherElements", ["allowed", "cand_idx"], ["allowed_at_cand"], axis=1),
        n("IsInf", ["allowed_at_cand"], ["cand_excluded"], detect_positive=0),
        n("Not", ["cand_excluded"], ["cand_allowed"]),
        n("GreaterOrEqual", [INPUT_CANDIDATE_SCORES, "zero_f"], ["cand_scored"]),
        n("And", ["cand_valid", "cand_scored"], ["cand_real"]),
        n("And", ["cand_real", "cand_allowed"], ["cand_use"]),
        n("Where", ["cand_valid", "neg_inf", "allowed_at_cand"], ["cand_update"]),
        n("ScatterElements", ["allowed", "cand_idx", "cand_update"], ["als_only"], axis=1),
    ]


def _topk_whole_rows() -> list[onnx.NodeProto]:
    """``short_approx``, ``short_idx``: the ``shortlist`` best of ``als_only`` in one pass."""
    return [
        helper.make_node(
            "TopK", ["als_only", INPUT_SHORTLIST], ["short_approx", "short_idx"], axis=1, largest=1, sorted=1
        )
    ]


def _topk_in_chunks() -> list[onnx.NodeProto]:
    """The same shortlist in two passes: the best of each chunk of a row, then the best of those.

    A GPU's TopK works a row per thread block; cutting one long row into chunks spreads it
    over many. The row is padded to whole chunks with -inf (padding indices are clamped to
    the last track and, scoring -inf, stay hidden like excluded tracks).
    """
    n = helper.make_node
    return [
        n("Pad", ["als_only", "chunk_pads", "neg_inf"], ["padded"]),
        n("Reshape", ["padded", "chunk_shape"], ["chunked"]),
        n("Min", [INPUT_SHORTLIST, "chunk_len"], ["per_chunk"]),
        n("TopK", ["chunked", "per_chunk"], ["chunk_best", "chunk_pos"], axis=1, largest=1, sorted=0),
        n("Shape", ["chunk_best"], ["best_shape"]),
        n("Slice", ["best_shape", "one_i", "two_i"], ["per_chunk_found"]),
        n("Concat", ["minus_one_i", "chunk_count", "per_chunk_found"], ["by_row_shape"], axis=0),
        n("Reshape", ["chunk_pos", "by_row_shape"], ["chunk_pos_3d"]),
        n("Add", ["chunk_pos_3d", "chunk_offsets"], ["global_3d"]),
        n("Min", ["global_3d", "last_track"], ["global_clamped"]),
        n("Reshape", ["global_clamped", "flat_rows"], ["pool_tracks"]),
        n("Reshape", ["chunk_best", "by_row_shape"], ["chunk_best_3d"]),
        n("Reshape", ["chunk_best_3d", "flat_rows"], ["pool_approx"]),
        n("TopK", ["pool_approx", INPUT_SHORTLIST], ["short_approx", "pool_at"], axis=1, largest=1, sorted=1),
        n("GatherElements", ["pool_tracks", "pool_at"], ["short_idx"], axis=1),
    ]


def _chunk_constants(n_items: int, length: int) -> list[TensorProto]:
    chunks = -(-n_items // length)
    t = helper.make_tensor
    return [
        t("chunk_pads", TensorProto.INT64, [4], [0, 0, 0, chunks * length - n_items]),
        t("chunk_shape", TensorProto.INT64, [2], [-1, length]),
        t("chunk_len", TensorProto.INT64, [1], [length]),
        t("chunk_count", TensorProto.INT64, [1], [chunks]),
        t("chunk_offsets", TensorProto.INT64, [chunks, 1], list(range(0, chunks * length, length))),
        t("last_track", TensorProto.INT64, [], [n_items - 1]),
        t("flat_rows", TensorProto.INT64, [2], [0, -1]),
        t("minus_one_i", TensorProto.INT64, [1], [-1]),
    ]


def _exact_dot(indices: str, out: str) -> list[onnx.NodeProto]:
    """``out[b, j] = item_factors[indices[b, j]] · user[b]`` in float32."""
    n = helper.make_node
    return [
        n("Gather", ["item_factors", indices], [f"{out}_rows"], axis=0),
        n("MatMul", [f"{out}_rows", "user_col"], [f"{out}_col"]),
        n("Squeeze", [f"{out}_col", "axis2"], [out]),
    ]


def _blend_scale(peak: str, out: str) -> list[onnx.NodeProto]:
    """``out``: the ALS factor of the blend, ``(1 - w) / |peak|`` (1 for plain ALS)."""
    n = helper.make_node
    return [
        n("IsInf", [peak], [f"{out}_no_peak"]),
        n("Where", [f"{out}_no_peak", "one", peak], [f"{out}_finite"]),
        n("Abs", [f"{out}_finite"], [f"{out}_abs"]),
        n("Max", [f"{out}_abs", "eps"], [f"{out}_norm"]),
        n("Sub", ["one", INPUT_WEIGHT], [f"{out}_share"]),
        n("Div", [f"{out}_share", f"{out}_norm"], [f"{out}_blend"]),
        n("Greater", [INPUT_WEIGHT, "zero_f"], [f"{out}_blending"]),
        n("Where", [f"{out}_blending", f"{out}_blend", "one"], [out]),
    ]


def _knn_part() -> list[onnx.NodeProto]:
    """``knn_part``: ``w · knn / max knn`` of every candidate (exact: no factors involved)."""
    n = helper.make_node
    return [
        n("Where", ["cand_use", INPUT_CANDIDATE_SCORES, "zero_f"], ["knn_allowed"]),
        n("ReduceMax", ["knn_allowed"], ["knn_best"], axes=[1], keepdims=1),
        n("Max", ["knn_best", "eps"], ["knn_norm"]),
        n("Div", ["knn_allowed", "knn_norm"], ["knn"]),
        n("Mul", ["knn", INPUT_WEIGHT], ["knn_part"]),
    ]


def _pick_candidates() -> list[onnx.NodeProto]:
    """``pick_pos``: the candidates rescored exactly, ``pick_use`` where they are usable.

    The ``shortlist`` best by an approximate blended score (approximate ALS scores and
    peak), then the :data:`PEAK_PICKS` best of the others by approximate ALS alone: the
    exact peak is usually a candidate, whatever its kNN score. Only these are rescored;
    the outputs bound the rest (see :func:`_rest_bounds`).
    """
    n = helper.make_node
    return [
        n("ReduceMax", ["short_approx"], ["short_approx_best"], axes=[1], keepdims=1),
        n("Where", ["cand_use", "allowed_at_cand", "neg_inf"], ["cand_approx"]),
        n("ReduceMax", ["cand_approx"], ["cand_approx_best"], axes=[1], keepdims=1),
        n("Max", ["short_approx_best", "cand_approx_best"], ["approx_peak"]),
        *_blend_scale("approx_peak", "pick_scale"),
        n("Mul", ["allowed_at_cand", "pick_scale"], ["cand_approx_scaled"]),
        n("Add", ["cand_approx_scaled", "knn_part"], ["cand_approx_sum"]),
        n("Where", ["cand_use", "cand_approx_sum", "neg_inf"], ["cand_key"]),
        n("Shape", ["cand_key"], ["cand_shape"]),
        n("Slice", ["cand_shape", "one_i", "two_i"], ["cand_count"]),
        n("Min", [INPUT_SHORTLIST, "cand_count"], ["blend_count"]),
        n("TopK", ["cand_key", "blend_count"], ["blend_key", "blend_pos"], axis=1, largest=1, sorted=0),
        n("IsInf", ["blend_key"], ["blend_unused"], detect_positive=0),
        n("Where", ["blend_unused", "neg_inf", "neg_inf"], ["blend_cleared"]),
        n("ScatterElements", ["cand_approx", "blend_pos", "blend_cleared"], ["unpicked_approx"], axis=1),
        n("Min", ["peak_picks", "cand_count"], ["peak_count"]),
        n("TopK", ["unpicked_approx", "peak_count"], ["peak_key", "peak_pos"], axis=1, largest=1, sorted=0),
        n("Concat", ["blend_key", "peak_key"], ["pick_key"], axis=1),
        n("Concat", ["blend_pos", "peak_pos"], ["pick_pos"], axis=1),
        n("IsInf", ["pick_key"], ["pick_unused"], detect_positive=0),
        n("Not", ["pick_unused"], ["pick_use"]),
        n("GatherElements", ["cand_idx", "pick_pos"], ["pick_idx"], axis=1),
        n("GatherElements", ["knn_part", "pick_pos"], ["pick_knn"], axis=1),
    ]


def _rest_bounds() -> list[onnx.NodeProto]:
    """Approximate ALS and blended maxima of the usable candidates that were not picked.

    A position picked twice (the second time with a ``-inf`` key) is cleared either way.
    """
    n = helper.make_node
    return [
        n("Where", ["pick_use", "neg_inf", "neg_inf"], ["pick_cleared"]),
        n("ScatterElements", ["cand_key", "pick_pos", "pick_cleared"], ["rest_key"], axis=1),
        n("IsInf", ["rest_key"], ["rest_unused"], detect_positive=0),
        n("Not", ["rest_unused"], ["rest_use"]),
        n("Where", ["rest_use", "allowed_at_cand", "neg_inf"], ["rest_approx"]),
        n("ReduceMax", ["rest_approx"], ["rest_als_unit"], axes=[1], keepdims=1),
        n("Mul", ["rest_als_unit", "row_scale"], [OUTPUT_REST_ALS]),
        n("Mul", ["row_scale", OUTPUT_SCALE], ["rest_scale"]),
        n("Mul", ["allowed_at_cand", "rest_scale"], ["rest_scaled"]),
        n("Add", ["rest_scaled", "knn_part"], ["rest_sum"]),
        n("Where", ["rest_use", "rest_sum", "neg_inf"], ["rest_blended"]),
        n("ReduceMax", ["rest_blended"], [OUTPUT_REST_BLEND], axes=[1], keepdims=1),
    ]


def _blend() -> list[onnx.NodeProto]:
    """Exact blended scores of the shortlist and the picked candidates, and their top ``k``."""
    n = helper.make_node
    return [
        n("ReduceMin", ["short_approx"], ["threshold_unit"], axes=[1], keepdims=1),
        n("Mul", ["threshold_unit", "row_scale"], [OUTPUT_THRESHOLD]),
        n("Unsqueeze", [INPUT_USER, "axis2"], ["user_col"]),
        *_knn_part(),
        *_pick_candidates(),
        *_exact_dot("short_idx", "short_exact"),
        *_exact_dot("pick_idx", "pick_exact"),
        n("IsInf", ["short_approx"], ["short_hidden"], detect_positive=0),
        n("Where", ["short_hidden", "neg_inf", "short_exact"], ["short_als"]),
        n("Where", ["pick_use", "pick_exact", "neg_inf"], ["pick_als"]),
        n("ReduceMax", ["short_als"], ["short_best"], axes=[1], keepdims=1),
        n("ReduceMax", ["pick_als"], ["pick_best"], axes=[1], keepdims=1),
        n("Max", ["short_best", "pick_best"], [OUTPUT_PEAK]),
        *_blend_scale(OUTPUT_PEAK, OUTPUT_SCALE),
        *_rest_bounds(),
        n("Mul", ["short_als", OUTPUT_SCALE], ["short_scaled"]),
        n("Where", ["short_hidden", "neg_inf", "short_scaled"], ["short_blended"]),
        n("Mul", ["pick_exact", OUTPUT_SCALE], ["pick_scaled"]),
        n("Add", ["pick_scaled", "pick_knn"], ["pick_sum"]),
        n("Where", ["pick_use", "pick_sum", "neg_inf"], ["pick_blended"]),
        n("Concat", ["short_blended", "pick_blended"], ["pool"], axis=1),
        n("Concat", ["short_idx", "pick_idx"], ["pool_idx"], axis=1),
        n("TopK", ["pool", INPUT_K], [OUTPUT_SCORES, "pool_pos"], axis=1, largest=1, sorted=1),
        n("GatherElements", ["pool_idx", "pool_pos"], [OUTPUT_INDICES], axis=1),
    ]


def _constants(q8_scale: float) -> list[TensorProto]:
    t = helper.make_tensor
    return [
        t("neg_inf", TensorProto.FLOAT, [], [-np.inf]),
        t("eps", TensorProto.FLOAT, [], [EPS]),
        t("one", TensorProto.FLOAT, [], [1.0]),
        t("zero_f", TensorProto.FLOAT, [], [0.0]),
        t("zero_i", TensorProto.INT64, [], [0]),
        t("zero_i8", TensorProto.INT8, [], [0]),
        t("q8_scale", TensorProto.FLOAT, [], [q8_scale]),
        t("axis2", TensorProto.INT64, [1], [2]),
        t("one_i", TensorProto.INT64, [1], [1]),
        t("two_i", TensorProto.INT64, [1], [2]),
        t("peak_picks", TensorProto.INT64, [1], [PEAK_PICKS]),
    ]


def build_scoring_graph(
    folder: Path,
    *,
    n_items: int,
    factors: int,
    q8_scale: float,
    max_row_l1: float,
    scan: Scan = "int8",
) -> onnx.ModelProto:
    """Graph over :data:`ITEM_FACTORS` (and :data:`QUANTIZED_FACTORS` for an int8 scan) in ``folder``."""
    value = helper.make_tensor_value_info
    batch = ["batch", "k"]
    factor_tensors = [
        _external(folder / ITEM_FACTORS, "item_factors", TensorProto.FLOAT, [n_items, factors], 4)
    ]
    if scan == "int8":
        factor_tensors.append(
            _external(folder / QUANTIZED_FACTORS, "item_factors_q8", TensorProto.INT8, [factors, n_items], 1)
        )
    length = SCAN_CHUNK if scan == "float32" and n_items > SCAN_CHUNK else 0
    shortlist = [*_shortlist(), *(_topk_in_chunks() if length else _topk_whole_rows())]
    graph = helper.make_graph(
        [*_scan(scan), *shortlist, *_blend()],
        "recsys_scoring",
        [
            value(INPUT_USER, TensorProto.FLOAT, ["batch", factors]),
            value(INPUT_EXCLUDE, TensorProto.INT64, ["batch", "excluded"]),
            value(INPUT_CANDIDATES, TensorProto.INT64, ["batch", "candidates"]),
            value(INPUT_CANDIDATE_SCORES, TensorProto.FLOAT, ["batch", "candidates"]),
            value(INPUT_WEIGHT, TensorProto.FLOAT, [1]),
            value(INPUT_K, TensorProto.INT64, [1]),
            value(INPUT_SHORTLIST, TensorProto.INT64, [1]),
        ],
        [
            value(OUTPUT_SCORES, TensorProto.FLOAT, batch),
            value(OUTPUT_INDICES, TensorProto.INT64, batch),
            value(OUTPUT_THRESHOLD, TensorProto.FLOAT, ["batch", 1]),
            value(OUTPUT_PEAK, TensorProto.FLOAT, ["batch", 1]),
            value(OUTPUT_SCALE, TensorProto.FLOAT, ["batch", 1]),
            value(OUTPUT_REST_ALS, TensorProto.FLOAT, ["batch", 1]),
            value(OUTPUT_REST_BLEND, TensorProto.FLOAT, ["batch", 1]),
        ],
        initializer=[
            *factor_tensors,
            *_constants(q8_scale),
            *(_chunk_constants(n_items, length) if length else []),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="recsys")
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            FORMAT_KEY: GRAPH_FORMAT,
            Q8_SCALE_KEY: repr(q8_scale),
            ROW_L1_KEY: repr(max_row_l1),
            SCAN_KEY: scan,
        },
    )
    return model


def export_scoring_graph(path: Path, item_factors_path: Path, *, n_items: int, factors: int) -> None:
    """Write the int8 factors and the scoring graph next to ``item_factors_path``."""
    if path.parent.resolve() != item_factors_path.parent.resolve():
        raise ValueError("the graph and the item factors must live in the same folder")
    if item_factors_path.name != ITEM_FACTORS:
        raise ValueError(f"the item factors must be stored as {ITEM_FACTORS}")
    factors_f32 = np.load(item_factors_path, mmap_mode="r")
    q8, scale = quantize(factors_f32)
    np.save(path.parent / QUANTIZED_FACTORS, q8)
    max_row_l1 = float(np.abs(factors_f32).sum(axis=1).max(initial=0.0))
    model = build_scoring_graph(
        path.parent, n_items=n_items, factors=factors, q8_scale=scale, max_row_l1=max_row_l1
    )
    path.write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(path))

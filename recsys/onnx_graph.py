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
(maxima over the row's allowed tracks, see :mod:`recsys.models.blend`), or its raw ALS dot
product when ``w = 0``.

How: the catalogue is scored approximately with int8 item factors (a quarter of the
bytes of float32, so 200k x 64 stays in a CPU's last-level cache), the ``shortlist`` best
non-candidate tracks are rescored exactly in float32 together with the kNN candidates,
and the best ``k`` of those are returned. The outputs ``threshold`` (the smallest
approximate score in the shortlist), ``peak`` (the best allowed exact ALS score) and
``scale`` (the ALS factor of the blend) let the caller prove a row exact: every track
outside the shortlist scores at most ``threshold + bound`` in ALS, where ``bound`` is the
quantization error bound (:func:`recsys.scoring.quantization_bound`). Rows it cannot prove
are scored again exactly (:class:`recsys.scoring.OnnxScorer` does both).

On a GPU the int8 pass is replaced by a float32 ``Gemm`` over the whole catalogue
(``scan="float32"``; onnxruntime's CUDA provider has no int8 ``MatMulInteger``, and the
GPU's memory bandwidth makes the full-precision pass cheap); the shortlist, the exact
rescoring and the proof stay the same, with a float32 rounding bound in place of the
quantization bound.

The factors are not copied into the graph: the initializers point into the version's
``item_factors.npy`` and ``item_factors_q8.npy`` as ONNX external data (offset past the
``.npy`` header). Opset 17 / IR 8, standard operators only (onnxruntime fuses the int8
product into one kernel).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8
GRAPH_FORMAT = "2"
"""Stored in the graph's metadata; scorers refuse other formats."""
FORMAT_KEY, Q8_SCALE_KEY, ROW_L1_KEY = "recsys.graph_format", "recsys.q8_scale", "recsys.max_row_l1"
SCAN_KEY = "recsys.scan"
SCAN_CHUNK = 16_384
"""Row length of the float32 scan's first TopK pass (catalogues up to this take one pass)."""
Scan = Literal["int8", "float32"]
"""Precision of the pass over the whole catalogue: int8 on a CPU, float32 on a GPU."""
INPUT_USER, INPUT_EXCLUDE, INPUT_K, INPUT_SHORTLIST = "user", "exclude", "k", "shortlist"
INPUT_CANDIDATES, INPUT_CANDIDATE_SCORES, INPUT_WEIGHT = "candidates", "candidate_scores", "weight"
OUTPUT_SCORES, OUTPUT_INDICES = "scores", "indices"
OUTPUT_THRESHOLD, OUTPUT_PEAK, OUTPUT_SCALE = "threshold", "peak", "scale"
QUANTIZED_FACTORS = "item_factors_q8.npy"
EPS = 1e-12


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
    """``approx``: every track's ALS score, from int8 factors or in float32."""
    n = helper.make_node
    if scan == "float32":
        return [n("Gemm", [INPUT_USER, "item_factors"], ["approx"], transB=1)]
    return [
        n("DynamicQuantizeLinear", [INPUT_USER], ["uq", "u_scale", "u_zero"]),
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
        t("one_i", TensorProto.INT64, [1], [1]),
        t("two_i", TensorProto.INT64, [1], [2]),
    ]


def _exact_dot(indices: str, out: str) -> list[onnx.NodeProto]:
    """``out[b, j] = item_factors[indices[b, j]] · user[b]`` in float32."""
    n = helper.make_node
    return [
        n("Gather", ["item_factors", indices], [f"{out}_rows"], axis=0),
        n("MatMul", [f"{out}_rows", "user_col"], [f"{out}_col"]),
        n("Squeeze", [f"{out}_col", "axis2"], [out]),
    ]


def _blend() -> list[onnx.NodeProto]:
    """Exact blended scores of the shortlist and the candidates, and their top ``k``."""
    n = helper.make_node
    return [
        n("ReduceMin", ["short_approx"], [OUTPUT_THRESHOLD], axes=[1], keepdims=1),
        n("Unsqueeze", [INPUT_USER, "axis2"], ["user_col"]),
        *_exact_dot("short_idx", "short_exact"),
        *_exact_dot("cand_idx", "cand_exact"),
        n("IsInf", ["short_approx"], ["short_hidden"], detect_positive=0),
        n("Where", ["short_hidden", "neg_inf", "short_exact"], ["short_als"]),
        n("Where", ["cand_use", "cand_exact", "neg_inf"], ["cand_als"]),
        n("ReduceMax", ["short_als"], ["short_best"], axes=[1], keepdims=1),
        n("ReduceMax", ["cand_als"], ["cand_best"], axes=[1], keepdims=1),
        n("Max", ["short_best", "cand_best"], [OUTPUT_PEAK]),
        n("IsInf", [OUTPUT_PEAK], ["no_peak"]),
        n("Where", ["no_peak", "one", OUTPUT_PEAK], ["peak_finite"]),
        n("Abs", ["peak_finite"], ["peak_abs"]),
        n("Max", ["peak_abs", "eps"], ["als_norm"]),
        n("Sub", ["one", INPUT_WEIGHT], ["als_share"]),
        n("Div", ["als_share", "als_norm"], ["blend_scale"]),
        n("Greater", [INPUT_WEIGHT, "zero_f"], ["blending"]),
        n("Where", ["blending", "blend_scale", "one"], [OUTPUT_SCALE]),
        n("Where", ["cand_use", INPUT_CANDIDATE_SCORES, "zero_f"], ["knn_allowed"]),
        n("ReduceMax", ["knn_allowed"], ["knn_best"], axes=[1], keepdims=1),
        n("Max", ["knn_best", "eps"], ["knn_norm"]),
        n("Div", ["knn_allowed", "knn_norm"], ["knn"]),
        n("Mul", ["knn", INPUT_WEIGHT], ["knn_part"]),
        n("Mul", ["short_als", OUTPUT_SCALE], ["short_scaled"]),
        n("Where", ["short_hidden", "neg_inf", "short_scaled"], ["short_blended"]),
        n("Mul", ["cand_exact", OUTPUT_SCALE], ["cand_scaled"]),
        n("Add", ["cand_scaled", "knn_part"], ["cand_sum"]),
        n("Where", ["cand_use", "cand_sum", "neg_inf"], ["cand_blended"]),
        n("Concat", ["short_blended", "cand_blended"], ["pool"], axis=1),
        n("Concat", ["short_idx", "cand_idx"], ["pool_idx"], axis=1),
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
    """Graph over ``item_factors.npy`` (and ``item_factors_q8.npy`` for an int8 scan) in ``folder``."""
    value = helper.make_tensor_value_info
    batch = ["batch", "k"]
    factor_tensors = [
        _external(folder / "item_factors.npy", "item_factors", TensorProto.FLOAT, [n_items, factors], 4)
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
    if item_factors_path.name != "item_factors.npy":
        raise ValueError("the item factors must be stored as item_factors.npy")
    factors_f32 = np.load(item_factors_path, mmap_mode="r")
    q8, scale = quantize(factors_f32)
    np.save(path.parent / QUANTIZED_FACTORS, q8)
    max_row_l1 = float(np.abs(factors_f32).sum(axis=1).max(initial=0.0))
    model = build_scoring_graph(
        path.parent, n_items=n_items, factors=factors, q8_scale=scale, max_row_l1=max_row_l1
    )
    path.write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(path))

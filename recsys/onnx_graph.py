"""The ONNX scoring graph of a model version: user vectors x item factors, exclusions, top-k.

Inputs: ``user`` float32 ``[batch, factors]``, ``exclude`` int64 ``[batch, n]`` (track
indices whose score becomes -inf; pad a row by repeating one of its indices) and ``k``
int64 ``[1]``. Outputs: ``scores`` float32 and ``indices`` int64, ``[batch, k]``, best first.

The item factors are not copied into the graph: the initializer points into the
version's ``item_factors.npy`` as ONNX external data (offset past the ``.npy`` header),
so both files describe one set of bytes. Opset 17 / IR 8, loadable by onnxruntime and
onnxruntime-gpu alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8
INPUT_USER, INPUT_EXCLUDE, INPUT_K = "user", "exclude", "k"
OUTPUT_SCORES, OUTPUT_INDICES = "scores", "indices"


def npy_data_offset(path: Path) -> int:
    """Byte offset of the array data in a ``.npy`` file (after its header)."""
    with path.open("rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        )
        read_header(fh)
        return fh.tell()


def build_scoring_graph(item_factors_path: Path, *, n_items: int, factors: int) -> onnx.ModelProto:
    """Graph over the ``float32`` C-ordered ``[n_items, factors]`` array in ``item_factors_path``."""
    items = TensorProto()
    items.name = "item_factors"
    items.data_type = TensorProto.FLOAT
    items.dims.extend([n_items, factors])
    items.data_location = TensorProto.EXTERNAL
    for key, value in (
        ("location", item_factors_path.name),
        ("offset", str(npy_data_offset(item_factors_path))),
        ("length", str(n_items * factors * 4)),
    ):
        entry = items.external_data.add()
        entry.key, entry.value = key, value
    nodes = [
        helper.make_node("Gemm", [INPUT_USER, "item_factors"], ["raw"], transB=1),
        helper.make_node("Shape", [INPUT_EXCLUDE], ["exclude_shape"]),
        helper.make_node("Expand", ["neg_inf", "exclude_shape"], ["neg_fill"]),
        helper.make_node("ScatterElements", ["raw", INPUT_EXCLUDE, "neg_fill"], ["masked"], axis=1),
        helper.make_node(
            "TopK",
            ["masked", INPUT_K],
            [OUTPUT_SCORES, OUTPUT_INDICES],
            axis=1,
            largest=1,
            sorted=1,
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "recsys_scoring",
        [
            helper.make_tensor_value_info(INPUT_USER, TensorProto.FLOAT, ["batch", factors]),
            helper.make_tensor_value_info(INPUT_EXCLUDE, TensorProto.INT64, ["batch", "excluded"]),
            helper.make_tensor_value_info(INPUT_K, TensorProto.INT64, [1]),
        ],
        [
            helper.make_tensor_value_info(OUTPUT_SCORES, TensorProto.FLOAT, ["batch", "k"]),
            helper.make_tensor_value_info(OUTPUT_INDICES, TensorProto.INT64, ["batch", "k"]),
        ],
        initializer=[items, helper.make_tensor("neg_inf", TensorProto.FLOAT, [], [-np.inf])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="recsys")
    model.ir_version = IR_VERSION
    return model


def export_scoring_graph(path: Path, item_factors_path: Path, *, n_items: int, factors: int) -> None:
    """Write the scoring graph next to ``item_factors_path`` (they must share a folder)."""
    if path.parent.resolve() != item_factors_path.parent.resolve():
        raise ValueError("the graph and the item factors must live in the same folder")
    model = build_scoring_graph(item_factors_path, n_items=n_items, factors=factors)
    path.write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(path))

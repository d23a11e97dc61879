"""Fixed-size NMS: reference, native (fused host kernel) and ONNX graph (ONNX
Runtime) against torchvision.ops.nms and against a naive greedy loop written
from the definition, on dense box sets with tied scores; edge cases; the
fixed-point Loop's convergence; graph structure; bad input."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
import pytest
import torch
import torchvision
from op_tester import IMPLS, OpTester, all_nodes

from vidtrt import _native

from vidtrt.export.onnx import export_module
from vidtrt.models import boxes as box_ops
from vidtrt.ops import fixed_size_nms
from vidtrt.ops.fixed_size_nms import MAX_BOXES, fixed_size_nms_native, threshold_float32

THRESHOLDS = [0.3, 0.5, 0.7, 0.9]
NEG_INF = float("-inf")


# ---------------------------------------------------------------- oracles


def iou_fp32(a, b) -> np.float32:
    """IoU of box a (the earlier, kept one) with box b, one FP32 rounding per
    operation in torchvision's order: inter / ((area_a + area_b) - inter)."""
    f = np.float32
    a, b = [f(v) for v in a], [f(v) for v in b]
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    w = max(f(0), min(a[2], b[2]) - max(a[0], b[0]))
    h = max(f(0), min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / ((area_a + area_b) - inter)


def nms_naive(boxes, scores, iou_threshold: float, max_output: int) -> list[int]:
    """Greedy NMS pair by pair: visit the valid entries by descending score
    (lower index first on ties); keep one unless a kept box overlaps it with
    IoU > iou_threshold. The FP32 IoU is compared with the threshold as a
    double, as torchvision does."""
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    order = sorted((i for i in range(len(scores)) if scores[i] > NEG_INF), key=lambda i: (-float(scores[i]), i))
    kept: list[int] = []
    for i in order:
        if len(kept) == max_output:
            break
        # float(): a numpy float32 compared with a Python float would round the threshold to FP32.
        if not any(float(iou_fp32(boxes[j], boxes[i])) > iou_threshold for j in kept):
            kept.append(i)
    return kept + [-1] * (max_output - len(kept))


def torchvision_nms(boxes, scores, iou_threshold: float, max_output: int) -> list[int]:
    """torchvision's survivors without the −inf (padding) entries, cut and padded to max_output."""
    keep = torchvision.ops.nms(boxes, scores, iou_threshold).tolist()
    keep = [i for i in keep if scores[i].item() > NEG_INF][:max_output]
    return keep + [-1] * (max_output - len(keep))


def dense_problem(seed: int, count: int, grid: bool, invalid_fraction: float = 0.1):
    """Boxes crowded into a 64×64 field (most pairs overlap), scores from 16
    levels (many ties), a fraction scored −inf. On the half-pixel grid, boxes
    repeat and IoUs hit exact fractions (like 3/10); off it, coordinates are
    arbitrary FP32 values."""
    rng = np.random.default_rng(seed)
    if grid:
        corner = rng.integers(0, 100, (count, 2)) / 2
        size = rng.integers(1, 60, (count, 2)) / 2
    else:
        corner = rng.uniform(0, 50, (count, 2))
        size = rng.uniform(0.5, 30, (count, 2))
    boxes = np.concatenate([corner, corner + size], axis=1).astype(np.float32)
    scores = (rng.integers(0, 16, count) / 16).astype(np.float32)
    scores[rng.random(count) < invalid_fraction] = NEG_INF
    return torch.from_numpy(boxes), torch.from_numpy(scores)


def chain(length: int):
    """Boxes 10 wide, each shifted 2 from the previous one, scores falling: IoU
    8/12 with the next box (> 0.5), 6/14 with the one after (< 0.5). Greedy
    keeps every other box, and each decision depends on the one before: the
    longest dependency a set of this size can have."""
    boxes = torch.tensor([[2.0 * i, 0, 2.0 * i + 10, 1] for i in range(length)])
    scores = torch.linspace(1.0, 0.01, length)
    return boxes, scores


def fixed_point_passes(boxes, scores, iou_threshold) -> int:
    """The ONNX function's iteration, written out naively: from keep = valid,
    keep[j] = valid[j] and no kept i before j overlaps it, until nothing
    changes; returns the number of passes (the last one changes nothing)."""
    count = len(scores)
    order = sorted(range(count), key=lambda i: (-float(scores[i]), i))
    position = {i: p for p, i in enumerate(order)}
    valid = [float(scores[i]) > NEG_INF for i in range(count)]
    overlaps = [[float(iou_fp32(boxes[i].tolist(), boxes[j].tolist())) > iou_threshold for j in range(count)]
                for i in range(count)]  # fmt: skip
    keep, passes = list(valid), 0
    while True:
        passes += 1
        new = [valid[j] and not any(keep[i] and valid[i] and position[i] < position[j] and overlaps[i][j]
                                    for i in range(count)) for j in range(count)]  # fmt: skip
        if new == keep:
            return passes
        keep = new


class DetectorNMS(torch.nn.Module):
    """The detectors' post-processing NMS (constant TopK, class offsets)."""

    def forward(self, boxes, scores, labels):
        return box_ops.fixed_size_nms(boxes, scores, 0.5, 64, 20, groups=labels)


def detector_problem(seed: int, count: int):
    """Dense boxes, three classes, distinct scores (torch.topk and ONNX TopK
    may order tied scores differently before the NMS sees them)."""
    rng = np.random.default_rng(seed)
    boxes, _ = dense_problem(seed, count, grid=True)
    scores = (rng.permutation(count) + 1).astype(np.float32) / count
    scores[rng.random(count) < 0.2] = NEG_INF
    return boxes, torch.from_numpy(scores), torch.from_numpy(rng.integers(0, 3, count))


GOOD = dict(boxes=torch.zeros(3, 4), scores=torch.zeros(3), iou_threshold=0.5, max_output=2)


class TestFixedSizeNMS(OpTester):
    op_type = "FixedSizeNMS"
    TOLERANCE = {torch.int32: {}}  # indices: compared exactly
    DYNAMIC_AXES = {"boxes": {0: "K"}, "scores": {0: "K"}}  # exported at K = 6 and run at every K
    GRAPH_DTYPES = (torch.float32, torch.float32)
    GRAPH_ATTRS = dict(iou_threshold=0.3, max_output=100)
    GRAPH_NODE_ATTRIBUTES = {
        "iou_threshold": float(np.nextafter(np.float32(0.3), np.float32(0))),  # 0.3 rounded down
        "max_output": 100,
    }
    GRAPH_OUTPUT_DIMS = [100]
    GOOD = GOOD
    DIFFERENTIABLE_INPUTS = ()  # indices: no gradient on either layer, so native has nothing to refuse
    BAD_INPUTS = [
        (dict(boxes=torch.zeros(12)), r"boxes must have rank 2 \[K, 4\], got shape \[12\]"),
        (dict(boxes=torch.zeros(3, 5)), r"boxes must have shape \[K, 4\] \(x1, y1, x2, y2\), got shape \[3, 5\]"),
        (dict(scores=torch.zeros(3, 1)), r"scores must have rank 1 \[K\], got shape \[3, 1\]"),
        (dict(scores=torch.zeros(4)), r"scores must have one entry per box, got boxes \[3, 4\] and scores \[4\]"),
        (dict(boxes=torch.zeros(3, 3)), r"boxes must have shape \[K, 4\] \(x1, y1, x2, y2\), got shape \[3, 3\]"),
        (dict(scores=torch.zeros(2)), r"scores must have one entry per box, got boxes \[3, 4\] and scores \[2\]"),
        (dict(boxes=torch.zeros(3, 4, dtype=torch.float64)), r"boxes must be float32 .*got torch.float64"),
        (dict(boxes=torch.zeros(3, 4, dtype=torch.float16)), r"boxes must be float32 .*got torch.float16"),
        (dict(scores=torch.zeros(3, dtype=torch.int64)), r"scores must be float32 .*got torch.int64"),
        (dict(boxes=[[0, 0, 1, 1]]), r"boxes must be a torch.Tensor, got list"),
        (dict(boxes=torch.zeros(MAX_BOXES + 1, 4), scores=torch.zeros(MAX_BOXES + 1)),
         r"at most 65536 boxes are supported, got boxes \[65537, 4\]"),
        (dict(boxes=torch.zeros(3, 4, device="meta")), r"must be on one device, got meta and cpu"),
        (dict(iou_threshold=float("nan")), r"iou_threshold must be finite, got nan"),
        (dict(iou_threshold=float("inf")), r"iou_threshold must be finite, got inf"),
        (dict(iou_threshold="0.5"), r"iou_threshold must be a float, got str"),
        (dict(iou_threshold=True), r"iou_threshold must be a float, got bool"),
        (dict(max_output=0), r"max_output must be >= 1, got 0"),
        (dict(max_output=2.0), r"max_output must be an int, got float"),
    ]  # fmt: skip
    # float64 is refused on every layer (BAD_INPUTS), so there is no native-only dtype rule.

    def export_inputs(self, dtypes, attrs):
        boxes = torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5], [9, 9, 12, 12], [0, 0, 4, 4], [2, 0, 6, 4], [8, 8, 9, 9]])
        scores = torch.tensor([0.9, 0.8, 0.7, 0.6, NEG_INF, 0.5])
        return boxes.to(dtypes[0]), scores.to(dtypes[1])

    def output_dtype(self, inputs):
        return torch.int32

    def compare(self, got, inputs, attrs, tolerance):
        """Index for index: torchvision's survivors and the naive loop's."""
        assert got.shape == (attrs["max_output"],)
        assert got.tolist() == torchvision_nms(*inputs, **attrs)
        assert got.tolist() == nms_naive(*inputs, **attrs)

    def keep(self, impl, boxes, scores, iou_threshold, max_output, directory) -> list[int]:
        """Runs `impl`, compares it with torchvision and the naive loop, returns its indices."""
        got = self.check(impl, boxes, scores, directory=directory, iou_threshold=iou_threshold, max_output=max_output)
        return got.tolist()

    def check_graph(self, model, node, function):
        op_types = {n.op_type for n in all_nodes(function.node)}
        assert "Loop" in op_types
        # Nothing with a data-dependent output shape, no TopK (TensorRT's K limit),
        # no MatMul (FP32 GEMMs do not build for every TensorRT-RTX target).
        assert not op_types & {"NonMaxSuppression", "NonZero", "TopK", "MatMul", "Gemm", "Compress", "Unique"}
        assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32

    # ---------------------------------------------------------------- exactness

    @pytest.mark.parametrize("impl", IMPLS)
    @pytest.mark.parametrize("iou_threshold", THRESHOLDS)
    @pytest.mark.parametrize("grid", [True, False], ids=["grid", "continuous"])
    @pytest.mark.parametrize("seed, count, max_output", [(0, 40, 300), (1, 150, 300), (2, 300, 25), (3, 7, 3)])
    def test_matches_torchvision_and_naive_loop(self, impl, iou_threshold, grid, seed, count, max_output, onnx_dir):
        boxes, scores = dense_problem(seed, count, grid)
        got = self.keep(impl, boxes, scores, iou_threshold, max_output, onnx_dir)
        if count >= 150:
            kept = sum(i >= 0 for i in got)
            assert 1 < kept < count, "a dense set must be thinned, not kept whole or emptied"

    @pytest.mark.parametrize("count", [63, 64, 65, 128, 130, 260])
    def test_native_scan_across_mask_words(self, count):
        """The host scan computes 64-position mask words as it reaches them:
        stops (max_output reached, an invalid entry) and kept counts on and
        around word boundaries, against the naive loop. Boxes spread over a
        field wide enough that many are kept and the scan crosses every word,
        crowded enough that boxes words apart in the order overlap."""
        rng = np.random.default_rng(count)
        corner = rng.uniform(0, 150, (count, 2))
        boxes = torch.from_numpy(np.concatenate([corner, corner + rng.uniform(5, 40, (count, 2))], axis=1).astype(np.float32))
        scores = torch.from_numpy((rng.integers(0, 32, count) / 32).astype(np.float32))
        scores[torch.from_numpy(rng.random(count) < 0.1)] = NEG_INF
        for max_output in sorted({1, 63, 64, 65, count - 1, count, count + 5}):
            want = nms_naive(boxes, scores, 0.3, max_output)
            assert fixed_size_nms_native(boxes, scores, 0.3, max_output).tolist() == want, max_output
        assert sum(i >= 0 for i in nms_naive(boxes, scores, 0.3, count)) > min(count // 3, 64)  # many are kept

    @pytest.mark.parametrize("impl", IMPLS)
    @pytest.mark.parametrize("iou_threshold", [0.5, 0.7])
    def test_large_candidate_set(self, impl, iou_threshold, onnx_dir):
        """An RPN-sized candidate list (the constant pre-NMS count of the detectors),
        checked against torchvision (the naive loop would take minutes)."""
        boxes, scores = dense_problem(11, 3840, grid=False, invalid_fraction=0.3)
        boxes = boxes * 10  # 640 px field: fewer overlaps per box, many survivors
        got = self.run(impl, boxes, scores, directory=onnx_dir, iou_threshold=iou_threshold, max_output=300)
        assert got.dtype == torch.int32 and got.shape == (300,)
        assert got.tolist() == torchvision_nms(boxes, scores, iou_threshold, 300)

    def test_ties_keep_the_lower_index_first(self):
        """torchvision's CPU NMS sorts stably: of equal scores, the lower index comes first."""
        count = 64
        boxes = torch.tensor([[10.0 * i, 0, 10.0 * i + 5, 5] for i in range(count)])  # disjoint: all survive
        scores = torch.from_numpy((np.random.default_rng(4).integers(0, 3, count) / 2).astype(np.float32))
        stable = torch.sort(scores, descending=True, stable=True).indices.tolist()
        assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == stable
        for impl in ("reference", "native"):
            assert fixed_size_nms(boxes, scores, 0.5, count, impl=impl).tolist() == stable

    @pytest.mark.parametrize("impl", IMPLS)
    def test_threshold_is_compared_like_torchvision(self, impl, onnx_dir):
        """IoU 3/10 rounds to the FP32 nearest 0.3, which lies above the double
        0.3: torchvision suppresses it at threshold 0.3. 7/10 rounds to the FP32
        value below 0.7: not suppressed at 0.7. (Rounding the threshold to nearest
        would get the first case wrong.)"""
        a = [0.0, 0, 10, 1]
        three_tenths = [7.0, 0, 10, 1]  # inter 3, union 10
        seven_tenths = [3.0, 0, 10, 1]  # inter 7, union 10
        assert float(iou_fp32(a, three_tenths)) == float(np.float32(0.3)) > 0.3
        assert float(iou_fp32(a, seven_tenths)) == float(np.float32(0.7)) < 0.7
        boxes = torch.tensor([a, three_tenths, a, seven_tenths])
        scores = torch.tensor([1.0, 0.9, 0.5, 0.4])
        groups = torch.tensor([0.0, 0, 1000, 1000])[:, None]  # two separate pairs
        boxes = boxes + groups
        assert self.keep(impl, boxes, scores, 0.3, 4, onnx_dir) == [0, 2, -1, -1]  # 1 goes at IoU == fp32(0.3)
        assert self.keep(impl, boxes, scores, 0.7, 4, onnx_dir) == [0, 1, 2, 3]

    def test_threshold_float32_rounds_down(self):
        rng = np.random.default_rng(5)
        for t in list(rng.uniform(-2, 2, 2000)) + THRESHOLDS + [0.0, 1.0, 1 / 3]:
            f = threshold_float32(t)
            assert f == float(np.float32(f)) and f <= t < float(np.nextafter(np.float32(f), np.float32(np.inf)))

    # ---------------------------------------------------------------- edge cases

    @pytest.mark.parametrize("impl", IMPLS)
    def test_empty_and_all_invalid(self, impl, onnx_dir):
        empty = self.run(impl, torch.zeros(0, 4), torch.zeros(0), directory=onnx_dir, iou_threshold=0.5, max_output=5)
        assert empty.tolist() == [-1] * 5
        boxes, _ = dense_problem(6, 20, grid=True)
        for bad in (NEG_INF, float("nan")):
            got = self.run(impl, boxes, torch.full((20,), bad), directory=onnx_dir, iou_threshold=0.5, max_output=5)
            assert got.tolist() == [-1] * 5, bad

    @pytest.mark.parametrize("impl", IMPLS)
    def test_nan_scores_are_invalid(self, impl, onnx_dir):
        """NaN is treated like −inf: never kept, suppresses nothing (torchvision
        would sort NaN first; padding never produces it)."""
        boxes, scores = dense_problem(7, 60, grid=True)
        scores[::5] = float("nan")
        as_padding = torch.where(torch.isnan(scores), torch.full_like(scores, NEG_INF), scores)
        got = self.run(impl, boxes, scores, directory=onnx_dir, iou_threshold=0.5, max_output=60).tolist()
        assert got == torchvision_nms(boxes, as_padding, 0.5, 60) == nms_naive(boxes, scores, 0.5, 60)

    @pytest.mark.parametrize("impl", IMPLS)
    def test_fewer_boxes_than_outputs_and_one_box(self, impl, onnx_dir):
        boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
        scores = torch.tensor([0.5, 0.9, 0.1])
        assert self.keep(impl, boxes, scores, 0.5, 8, onnx_dir) == [1, 2] + [-1] * 6
        assert self.keep(impl, boxes[:1], scores[:1], 0.5, 8, onnx_dir) == [0] + [-1] * 7
        assert self.keep(impl, boxes[:1], scores[:1], 0.5, 1, onnx_dir) == [0]
        invalid = self.run(impl, boxes[:1], torch.tensor([NEG_INF]), directory=onnx_dir, iou_threshold=0.5,
                           max_output=3)
        assert invalid.tolist() == [-1, -1, -1]
        assert self.keep(impl, boxes, scores, 0.5, 1, onnx_dir) == [1]  # cut to max_output

    @pytest.mark.parametrize("impl", IMPLS)
    def test_identical_boxes(self, impl, onnx_dir):
        box = [3.0, 4, 20, 30]
        boxes = torch.tensor([box] * 12 + [[100.0, 100, 110, 110]])
        tied = torch.full((13,), 0.5)
        assert self.keep(impl, boxes, tied, 0.9, 13, onnx_dir)[:3] == [0, 12, -1]  # IoU 1: the lowest index survives
        scores = torch.linspace(0.1, 0.9, 13)
        assert self.keep(impl, boxes, scores, 0.9, 13, onnx_dir)[:3] == [12, 11, -1]

    @pytest.mark.parametrize("impl", IMPLS)
    def test_degenerate_boxes(self, impl, onnx_dir):
        """Zero-area boxes (points, segments) have IoU 0 with anything of positive
        area and 0/0 = NaN with each other, which is not > any threshold: nothing
        suppresses them. Reversed boxes (x2 < x1) have negative areas; whatever
        their IoU is, it is torchvision's."""
        boxes = torch.tensor([
            [5.0, 5, 5, 5], [5, 5, 5, 5],      # the same point twice
            [0, 2, 10, 2], [0, 2, 10, 2],      # the same horizontal segment twice
            [0, 0, 10, 10],                    # a box containing all of them
            [4, 4, 4, 9],                      # a vertical segment inside it
            [10, 10, 0, 0], [9, 9, 1, 1],      # reversed boxes
            [0, 0, 10, 10],                    # the box again: suppressed
        ])  # fmt: skip
        scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
        for threshold in THRESHOLDS:
            got = self.keep(impl, boxes, scores, threshold, 9, onnx_dir)
            assert got[:6] == [0, 1, 2, 3, 4, 5] and 8 not in got

    # ---------------------------------------------------------------- the fixed-point Loop

    def loop_passes(self, iou_threshold, max_output, boxes, scores, directory) -> tuple[list[int], int]:
        """Runs the exported graph with the function inlined and the Loop's pass
        count exposed as a second output: (keep, passes)."""
        path = self.export_path(directory, (torch.float32, torch.float32),
                                dict(iou_threshold=iou_threshold, max_output=max_output))  # fmt: skip
        model = onnx.inliner.inline_local_functions(onnx.load(path))
        loops = [n for n in model.graph.node if n.op_type == "Loop"]
        assert len(loops) == 1
        model.graph.output.append(onnx.helper.make_tensor_value_info(loops[0].output[1], onnx.TensorProto.INT64, []))
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        keep, passes = session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy()})
        return keep.tolist(), int(passes)

    def test_long_suppression_chain_converges(self, onnx_dir):
        length = 120
        boxes, scores = chain(length)
        evens = list(range(0, length, 2))
        expected = evens + [-1] * (150 - len(evens))
        for impl in ("reference", "native"):
            assert self.keep(impl, boxes, scores, 0.5, 150, onnx_dir) == expected
        keep, passes = self.loop_passes(0.5, 150, boxes, scores, onnx_dir)
        assert keep == expected
        # After p passes the first p entries of the order are final; here each
        # entry's fate flips until its predecessor's is settled, so the loop runs
        # the full chain, and stops after one pass without change.
        assert passes == fixed_point_passes(boxes, scores, 0.5)
        assert length - 1 <= passes <= length
        print(f"chain of {length} boxes: {passes} Loop passes")

        # The same boxes in reverse score order (the chain runs from the last
        # index to the first) converge the same way.
        reverse = torch.flip(scores, [0])
        keep, passes_reversed = self.loop_passes(0.5, 150, boxes, reverse, onnx_dir)
        assert keep == torchvision_nms(boxes, reverse, 0.5, 150)
        assert passes_reversed == passes

    def test_dense_sets_converge_in_few_passes(self, onnx_dir):
        """The trip count K is a bound; "changed" ends the loop long before it."""
        for seed in range(3):
            boxes, scores = dense_problem(20 + seed, 120, grid=True)
            keep, passes = self.loop_passes(0.5, 300, boxes, scores, onnx_dir)
            assert keep == torchvision_nms(boxes, scores, 0.5, 300)
            assert passes == fixed_point_passes(boxes, scores, 0.5)
            assert passes < 30
            print(f"dense set of 120 boxes, seed {seed}: {passes} Loop passes")

    # ---------------------------------------------------------------- native layouts and threads

    def test_native_accepts_any_layout(self):
        boxes, scores = dense_problem(8, 200, grid=True)
        wide = torch.zeros(200, 9)
        wide[:, 1::2] = boxes  # coordinate stride 2
        strided_boxes = wide[:, 1::2]
        spread = torch.zeros(600)
        spread[::3] = scores
        strided_scores = spread[::3]
        assert not strided_boxes.is_contiguous() and not strided_scores.is_contiguous()
        want = fixed_size_nms(boxes, scores, 0.5, 50, impl="native")
        torch.testing.assert_close(fixed_size_nms(strided_boxes, strided_scores, 0.5, 50, impl="native"), want)
        transposed = boxes.t().contiguous().t()  # box stride 1, coordinate stride 200
        torch.testing.assert_close(fixed_size_nms(transposed, scores, 0.5, 50, impl="native"), want)

    def test_native_thread_count_does_not_change_results(self):
        boxes, scores = dense_problem(9, 700, grid=False)
        threshold = threshold_float32(0.7)
        self.assert_thread_count_invariant(fixed_size_nms_native, boxes, scores, threshold, 300, threads=(1, 2, 3, 8))

    # ---------------------------------------------------------------- graphs

    def test_detector_nms_exports_to_the_op_and_matches_eager(self, onnx_dir):
        path = f"{onnx_dir}/detector_nms.onnx"
        export_module(DetectorNMS(), detector_problem(10, 50), path, ["boxes", "scores", "labels"], ["index", "valid"],
                      {"boxes": {0: "K"}, "scores": {0: "K"}, "labels": {0: "K"}})  # fmt: skip
        model = onnx.load(path)
        op_types = [n.op_type for n in model.graph.node]
        assert "FixedSizeNMS" in op_types and "NonMaxSuppression" not in op_types
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        for seed, count in ((10, 50), (12, 33), (13, 64)):
            boxes, scores, labels = detector_problem(seed, count)
            index, valid = box_ops.fixed_size_nms(boxes, scores, 0.5, 64, 20, groups=labels)
            got_index, got_valid = session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy(),
                                                      "labels": labels.numpy()})  # fmt: skip
            np.testing.assert_array_equal(got_valid, valid.numpy())
            np.testing.assert_array_equal(got_index, index.numpy())
            # Class-wise NMS: the survivors of each class are torchvision's on that class alone.
            kept = index[valid].tolist()
            for label in range(3):
                members = [i for i in range(count) if labels[i] == label and scores[i] > NEG_INF]
                mine = [i for i in kept if labels[i] == label]
                theirs = torchvision.ops.nms(boxes[members], scores[members], 0.5).tolist()
                assert mine == [members[i] for i in theirs][: len(mine)]

    # ---------------------------------------------------------------- bad input (and the shared tests)

    def test_kernel_library_refuses_what_python_would(self):
        """The binding's own checks, for callers that skip the Python layer."""
        boxes, scores = GOOD["boxes"], GOOD["scores"]
        keep = torch.empty(2, dtype=torch.int32)
        call = self.binding(
            "fixed_size_nms_forward", boxes=boxes.data_ptr(), scores=scores.data_ptr(), keep=keep.data_ptr(), count=3,
            max_output=2, iou_threshold=0.5, boxes_strides=boxes.stride(), scores_stride=1, keep_stride=1,
        )  # fmt: skip
        call()
        assert keep.tolist() == [0, 1]  # three identical points, tied: their NaN IoUs suppress nothing
        for bad in (dict(max_output=0), dict(count=-1), dict(count=MAX_BOXES + 1), dict(iou_threshold=float("nan"))):
            with pytest.raises(ValueError, match="fixed_size_nms: invalid shape or attribute"):
                call(**bad)
        assert _native.kernels().FIXED_SIZE_NMS_MAX_BOXES == MAX_BOXES

    # ---------------------------------------------------------------- the problems selfcheck and the roofline use

    def test_work_and_paper_problem_by_hand(self):
        """Counts on K = 10 written out: 45 pairs of ~12 FLOPs each (areas,
        the intersection's four min/max and two subtractions, its product,
        the union and the ratio); bytes: the 10 boxes and scores read and the
        10×10 suppression bits written and scanned. And the paper-scale
        problem: the RPN's 3840 proposals of 16..400 px on a 600×1000 image,
        IoU 0.7, 300 survivors."""
        from vidtrt.ops.fixed_size_nms import paper_problem, work

        boxes, scores = torch.zeros(10, 4), torch.zeros(10)
        assert work((boxes, scores), {"iou_threshold": 0.7, "max_output": 3}) == {
            "flops": 12.0 * 45,
            "bytes": 4.0 * 10 * 5 + 2 * 100 / 8,
        }
        (boxes, scores), attrs, counted = paper_problem()
        assert boxes.shape == (3840, 4) and scores.shape == (3840,)
        assert attrs == {"iou_threshold": 0.7, "max_output": 300} and counted == work((boxes, scores), attrs)
        sizes = boxes[:, 2:] - boxes[:, :2]
        centres = (boxes[:, 2:] + boxes[:, :2]) / 2
        assert float(sizes.min()) >= 16 and float(sizes.max()) <= 400 and float(sizes.max()) > 390
        assert float(centres[:, 0].max()) > 990 and float(centres[:, 1].max()) > 590 and float(centres.min()) >= 0
        # x and y drawn apart: neither the centres on one diagonal nor every box square.
        assert not torch.allclose(centres[:, 0] / 1000, centres[:, 1] / 600)
        assert not torch.allclose(sizes[:, 0], sizes[:, 1])
        assert float(centres.min(0).values.max()) < 10  # spread over the image, from its top-left corner on
        assert bool(torch.isfinite(scores).all()) and float(scores.min()) >= 0 and float(scores.max()) < 1

    def test_selfcheck_example_has_ties_and_padding(self):
        """The example `vidtrt selfcheck` runs: 1000 boxes of 16..216 px on a
        600×1000 image, every tenth padded with −inf, scores on a grid of
        1/200 (so many tie), IoU 0.7, up to 300 survivors; FP32 only."""
        from vidtrt.ops.fixed_size_nms import example

        (boxes, scores), attrs = example()
        assert boxes.shape == (1000, 4) and attrs == {"iou_threshold": 0.7, "max_output": 300}
        padded = torch.isinf(scores)
        assert padded.tolist() == [i % 10 == 0 for i in range(1000)]
        finite = scores[~padded]
        steps = finite * 200
        assert float((steps - steps.round()).abs().max()) < 1e-3 and len(set(finite.tolist())) <= 200
        assert float(finite.min()) >= 0 and float(finite.max()) < 1
        sizes = boxes[:, 2:] - boxes[:, :2]
        assert float(sizes.min()) >= 16 and float(sizes.max()) <= 216 and float(sizes.max()) > 210
        centres = (boxes[:, 2:] + boxes[:, :2]) / 2
        assert float(centres[:, 0].max()) > 980 and float(centres[:, 1].max()) > 580 and float(centres.min()) >= 0
        assert not torch.allclose(centres[:, 0] / 1000, centres[:, 1] / 600)
        assert not torch.allclose(sizes[:, 0], sizes[:, 1])
        assert float(centres.min(0).values.max()) < 10  # spread over the image, from its top-left corner on
        keep = fixed_size_nms(boxes, scores, **attrs)
        assert keep.shape == (300,) and not set(keep[keep >= 0].tolist()) & set(range(0, 1000, 10))
        with pytest.raises(ValueError, match="float32"):
            example(torch.float16)

    # ---------------------------------------------------------------- from the mutation run

    @pytest.mark.parametrize("impl", IMPLS)
    def test_small_boxes_apart_on_both_axes_do_not_overlap(self, impl, onnx_dir):
        """Boxes 1 px wide, 0.5 px apart in x and in y: both intersection
        extents are negative, and only their clamp at 0 keeps the product
        (0.25 without it) from counting as an overlap. Both boxes are kept,
        even at a threshold of 0.01."""
        boxes = torch.tensor([[0.0, 0, 1, 1], [1.5, 1.5, 2.5, 2.5], [-1.5, 1.5, -0.5, 2.5]])
        scores = torch.tensor([0.9, 0.8, 0.7])
        assert self.keep(impl, boxes, scores, 0.01, 4, onnx_dir) == [0, 1, 2, -1]

    def test_exactly_max_boxes_accepted(self):
        """MAX_BOXES itself is allowed (one more is refused, BAD_INPUTS)."""
        from vidtrt.ops.fixed_size_nms import check_inputs

        check_inputs(torch.zeros(MAX_BOXES, 4), torch.zeros(MAX_BOXES), 0.5, 1)

    def test_loop_body_reduces_to_its_shapes(self, onnx_dir):
        """The fixed-point Loop's two sums drop the reduced axis (keepdims=0):
        `hits` is [K], like the carried `keep`, and `changes`, hence the
        condition, a scalar on every pass. ONNX Runtime would also run a [1, K]
        carry and a [1] condition; TensorRT needs loop-carried shapes that do
        not change. (Shape inference cannot show it: the carried input has no
        declared shape.)"""
        path = self.export_path(onnx_dir, (torch.float32, torch.float32), self.GRAPH_ATTRS)
        model = onnx.inliner.inline_local_functions(onnx.load(path))
        body = next(n for n in model.graph.node if n.op_type == "Loop").attribute[0].g
        sums = [n for n in body.node if n.op_type == "ReduceSum"]
        assert len(sums) == 2
        for node in sums:
            assert [onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "keepdims"] == [0]

    @pytest.mark.parametrize("impl", IMPLS)
    def test_negative_threshold_suppresses_disjoint_boxes(self, impl, onnx_dir):
        """Below 0 every IoU is over the threshold, as in torchvision: a kept
        box suppresses even boxes beside it, 0.9 px apart along x or along y.
        The apart extent is negative; clamped at 0 it makes the intersection
        0, not negative (unclamped, the IoU would be -9/29, below -0.1)."""
        beside = torch.tensor([[0.0, 0, 1, 10], [1.9, 0, 2.9, 10]])
        above = torch.tensor([[0.0, 0, 10, 1], [0, 1.9, 10, 2.9]])
        scores = torch.tensor([0.9, 0.8])
        for boxes in (beside, above):
            assert self.keep(impl, boxes, scores, -0.1, 2, onnx_dir) == [0, -1]

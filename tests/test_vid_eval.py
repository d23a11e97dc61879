"""ImageNet VID evaluation (`vidtrt eval`) and the synthetic VID set
(`vidtrt synth-vid`): ground truth scores 1.0, hand-built cases with known
AP (duplicates, misses, wrong class, small objects, motion bins), a
cross-check against an independent implementation of the devkit's
algorithm written here, the readers of both detection formats, and the
generator's determinism and coverage."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from vidtrt.cli import main as cli_main
from vidtrt.eval.synth_vid import SynthConfig, write_synth_vid
from vidtrt.runtime.synthetic import write_clip
from vidtrt.eval.vid import FrameDetections, FrameTruth, evaluate, load_ground_truth, motion_bin, motion_ious


def truth(index, boxes, labels, tracks=None, snippet="s0"):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    tracks = np.arange(len(boxes)) if tracks is None else np.asarray(tracks)
    return FrameTruth(snippet, f"{index:06d}", index, 100, 100, boxes, np.asarray(labels, np.int64), tracks)


def dets(boxes, scores, labels):
    return FrameDetections(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64), np.asarray(labels, np.int64))


def run(frames, detections, rule="devkit"):
    motion_ious(frames)
    return evaluate(frames, detections, rule)


# ------------------------------------------------------------ hand-built cases

BOX = [10, 10, 49, 49]  # 40 x 40 in the devkit's inclusive pixels


def test_ground_truth_as_detections_scores_one():
    frames = [truth(i, [BOX, [60, 60, 89, 79]], [0, 3]) for i in range(1, 4)]
    result = run(frames, {f.index: dets(f.boxes, [0.9, 0.8], f.labels) for f in frames})
    assert result.map["all"] == 1.0 and result.per_class == {"airplane": 1.0, "bicycle": 1.0}


def test_a_false_positive_ranked_first_halves_the_ap():
    frames = [truth(1, [BOX], [0])]
    result = run(frames, {1: dets([[60, 60, 90, 90], BOX], [0.9, 0.8], [0, 0])})
    assert result.map["all"] == pytest.approx(0.5)  # recall 1 reached at precision 1/2


def test_duplicates_count_once():
    frames = [truth(1, [BOX], [0])]
    result = run(frames, {1: dets([BOX, BOX, [11, 11, 49, 49]], [0.9, 0.8, 0.7], [0, 0, 0])})
    assert result.map["all"] == 1.0  # recall 1 at the first detection; the duplicates come after


def test_misses_and_wrong_class():
    frames = [truth(1, [BOX, [60, 60, 99, 99]], [0, 0])]
    assert run(frames, {1: dets([BOX], [0.9], [0])}).map["all"] == pytest.approx(0.5)
    wrong = run(frames, {1: dets([BOX, [60, 60, 99, 99]], [0.9, 0.9], [1, 1])})
    assert wrong.map["all"] == 0.0 and wrong.per_class == {"airplane": 0.0}  # antelope has no ground truth: not averaged


def test_small_objects_get_the_devkit_threshold():
    # A 10 x 10 box: threshold min(0.5, 100 / 400) = 0.25. A detection shifted by 4 px has IoU 6·10 / (200 − 60) = 0.43.
    frames = [truth(1, [[20, 20, 29, 29]], [2])]
    shifted = {1: dets([[24, 20, 33, 29]], [0.9], [2])}
    assert run(frames, shifted, "devkit").map["all"] == 1.0
    assert run(frames, shifted, "plain").map["all"] == 0.0


def test_motion_iou_and_bins_by_hand():
    # Track 0 stands still; track 1 (10 x 10) moves 3 px a frame: its IoU with itself d frames away is
    # (10 - 3d)·10 / (200 - (10 - 3d)·10) for d ≤ 3, 0 after.
    frames = [truth(i + 1, [BOX, [3 * i, 70, 3 * i + 9, 79]], [0, 1], tracks=[0, 1]) for i in range(5)]
    motion_ious(frames)
    iou = {d: ((10 - 3 * d) * 10) / (200 - (10 - 3 * d) * 10) if d < 4 else 0.0 for d in range(1, 5)}
    assert frames[0].motion_iou[0] == 1.0 and motion_bin(1.0) == "slow"
    np.testing.assert_allclose(frames[0].motion_iou[1], np.mean([iou[d] for d in (1, 2, 3, 4)]))
    np.testing.assert_allclose(frames[2].motion_iou[1], np.mean([iou[1], iou[2], iou[1], iou[2]]))
    assert motion_bin(frames[2].motion_iou[1]) == "fast"
    # Detect the slow track only: slow AP 1, fast AP 0 (bicycle's boxes are all fast).
    result = evaluate(frames, {f.index: dets([BOX], [0.9], [0]) for f in frames})
    assert result.map["slow"] == 1.0 and result.map["fast"] == 0.0 and result.map["all"] == 0.5
    assert result.map["medium"] != result.map["medium"]  # no medium boxes: NaN, reported as such


# ------------------------------------------------------------ an independent implementation


def devkit_map_by_hand(frames, detections, small_rule=True):
    """The devkit's eval_vid_detection, written independently: per class all
    detections of the split sorted by score (stable), each greedily taking
    the best unmatched box of its frame above its threshold; AP by the VOC
    loop over the precision envelope."""
    classes = sorted({int(c) for f in frames for c in f.labels})
    aps = []
    for c in classes:
        entries = []
        for f in frames:
            d = detections.get(f.index)
            if d is None:
                continue
            for box, score, label in zip(d.boxes, d.scores, d.labels):
                if label == c:
                    entries.append((-score, len(entries), f.index, box))
        entries.sort(key=lambda e: (e[0], e[1]))
        gts = {f.index: [(b, False) for b, l in zip(f.boxes, f.labels) if l == c] for f in frames}
        npos = sum(len(v) for v in gts.values())
        tp, fp = [], []
        for _, _, index, box in entries:
            best, arg = -1.0, -1
            for k, (g, used) in enumerate(gts[index]):
                gw, gh = g[2] - g[0] + 1, g[3] - g[1] + 1
                thr = min(0.5, gw * gh / ((gw + 10) * (gh + 10))) if small_rule else 0.5
                iw = min(box[2], g[2]) - max(box[0], g[0]) + 1
                ih = min(box[3], g[3]) - max(box[1], g[1]) + 1
                inter = max(iw, 0) * max(ih, 0)
                union = (box[2] - box[0] + 1) * (box[3] - box[1] + 1) + gw * gh - inter
                ov = inter / union
                if not used and ov >= thr and ov > best:
                    best, arg = ov, k
            if arg >= 0:
                gts[index][arg] = (gts[index][arg][0], True)
            tp.append(1.0 if arg >= 0 else 0.0)
            fp.append(0.0 if arg >= 0 else 1.0)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos
        prec = tp / np.maximum(tp + fp, np.finfo(float).eps)
        mrec = [0.0] + list(rec) + [1.0]
        mpre = [0.0] + list(prec) + [0.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        aps.append(sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]))
    return float(np.mean(aps))


@pytest.mark.parametrize("seed", range(6))
def test_matches_an_independent_implementation(seed):
    rng = np.random.default_rng(seed)
    frames, detections = [], {}
    for i in range(1, 15):
        n = int(rng.integers(0, 4))
        xy = rng.uniform(0, 60, size=(n, 2))
        wh = rng.uniform(4, 40, size=(n, 2))
        boxes = np.round(np.concatenate([xy, xy + wh], 1))
        labels = rng.integers(0, 3, size=n)
        frames.append(truth(i, boxes, labels))
        m = int(rng.integers(0, 6))
        jitter = rng.normal(0, 3, size=(m, 4))
        base = boxes[rng.integers(0, n, size=m)] if n else rng.uniform(0, 60, size=(m, 4))
        scores = np.round(rng.uniform(0, 1, size=m), 2)  # ties included
        detections[i] = dets(base + jitter, scores, rng.integers(0, 3, size=m))
    for rule, small in (("devkit", True), ("plain", False)):
        got = run(frames, detections, rule).map["all"]
        assert got == pytest.approx(devkit_map_by_hand(frames, detections, small), abs=1e-12), rule


# ------------------------------------------------------------ the synthetic set and the CLI


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_synth_vid_is_deterministic_and_covers_every_motion_bin(tmp_path):
    cfg = SynthConfig(videos=4, frames=24, seed=3)
    write_synth_vid(tmp_path / "a", cfg)
    write_synth_vid(tmp_path / "b", cfg)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_synth_vid(tmp_path / "c", SynthConfig(videos=4, frames=24, seed=4))
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    frames = load_ground_truth(tmp_path / "a", "val")
    assert len(frames) == 96 and [f.index for f in frames] == list(range(1, 97))
    bins = Counter(motion_bin(m) for f in frames for m in f.motion_iou)
    assert set(bins) == {"slow", "medium", "fast"}, bins
    summary = json.loads((tmp_path / "a" / "synth_val.json").read_text())
    assert sum(len(v) for v in summary["degraded"].values()) > 0
    assert {int(label) for f in frames for label in f.labels} <= set(range(5))
    # Ground truth given back as detections scores 1.0 on every bin.
    perfect = {f.index: dets(f.boxes, np.ones(len(f.boxes)), f.labels) for f in frames}
    assert evaluate(frames, perfect).map == {"all": 1.0, "slow": 1.0, "medium": 1.0, "fast": 1.0}


def test_cli_synth_vid_run_and_eval(tmp_path, capsys):
    import cv2

    data = tmp_path / "synth"
    assert cli_main(["synth-vid", "--out", str(data), "--videos", "1", "--frames", "8", "--seed", "1", "--no-progress"]) == 0
    assert "wrote 8 frames of 1 snippets" in capsys.readouterr().out
    assert cli_main(["synth-vid", "--out", str(data), "--videos", "1", "--frames", "8"]) == 1  # exists: refuses
    assert "--force" in capsys.readouterr().err
    snippet = next((data / "Data" / "VID" / "val").iterdir())
    assert cv2.imread(str(next(snippet.iterdir()))).shape == (192, 256, 3)  # the default 256x192 is width x height
    # A video named after the snippet, so the JSON lines' source names it.
    video = write_clip([cv2.imread(str(p)) for p in sorted(snippet.iterdir())], tmp_path / f"{snippet.name}.mp4")
    bundle = tmp_path / "bundle"
    assert cli_main(["export", "--config", "psla_small", "--out", str(bundle), "--precisions", "fp32", "--no-verify"]) == 0
    assert cli_main(["run", str(bundle), str(video), "--out", str(tmp_path / "run"), "--outputs", "jsonl,vid", "--no-progress"]) == 0
    capsys.readouterr()
    results = {}
    for name in ("detections.jsonl", "imagenet_vid.txt"):
        out = tmp_path / f"{name}.json"
        assert cli_main(["eval", str(tmp_path / "run" / name), "--data", str(data), "--json", str(out)]) == 0
        assert "ImageNet VID mAP@0.5 over 8 frames" in capsys.readouterr().out
        results[name] = json.loads(out.read_text())["map"]["all"]
    assert results["detections.jsonl"] == pytest.approx(results["imagenet_vid.txt"], abs=1e-9)  # both readers agree


def test_cli_eval_bad_input(tmp_path, capsys):
    assert cli_main(["eval", str(tmp_path / "x.txt"), "--data", str(tmp_path)]) == 1
    assert "no split file" in capsys.readouterr().err
    write_synth_vid(tmp_path / "d", SynthConfig(videos=1, frames=3))
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 0.5 1 2 3\n")
    assert cli_main(["eval", str(bad), "--data", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "bad.txt:1: expected '<frame index> <class 1-30>" in err and "Traceback" not in err
    bad.write_text("9 1 0.5 1 2 3 4\n")
    assert cli_main(["eval", str(bad), "--data", str(tmp_path / "d")]) == 1
    assert "not in the split" in capsys.readouterr().err


def test_bench_reports_map_against_ground_truth(tmp_path, capsys):
    """`vidtrt bench --gt` on a devkit snippet folder: each precision's VID
    mAP (overall and per motion speed), the FP32 one equal to `vidtrt eval`
    of a run's JSON lines on the same snippet."""
    data = tmp_path / "synth"
    write_synth_vid(data, SynthConfig(videos=1, frames=6, seed=5))
    snippet = next((data / "Data" / "VID" / "val").iterdir())
    bundle = tmp_path / "bundle"
    assert cli_main(["export", "--config", "psla_small", "--out", str(bundle), "--precisions", "fp32,fp16", "--no-verify", "-q"]) == 0
    report_path = tmp_path / "bench.json"
    code = cli_main(["bench", str(bundle), str(snippet), "--gt", str(data), "--json", str(report_path), "--no-progress", "--warmup", "0"])
    assert code == 0, capsys.readouterr().err
    assert "VID mAP vs ground truth all" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["ground_truth"]["frames"] == 6
    for precision in ("fp32", "fp16"):
        maps = report["end_to_end"][precision]["map_vs_ground_truth"]
        assert set(maps) == {"all", "slow", "medium", "fast"} and 0.0 <= maps["all"] <= 1.0
    assert cli_main(["run", str(bundle), str(snippet), "--out", str(tmp_path / "run"), "--outputs", "jsonl", "--no-progress"]) == 0
    assert cli_main(["eval", str(tmp_path / "run" / "detections.jsonl"), "--data", str(data), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["map"]["all"] == pytest.approx(report["end_to_end"]["fp32"]["map_vs_ground_truth"]["all"])
    assert cli_main(["bench", str(bundle), str(snippet), "--gt", str(tmp_path)]) == 1  # no devkit there
    assert "no split file" in capsys.readouterr().err

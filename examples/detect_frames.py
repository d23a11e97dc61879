"""Detect objects in a video frame by frame with vidtrt's embedding API.

    python examples/detect_frames.py [WORK_DIR]

Exports the small PSLA model into WORK_DIR/psla_small (a temporary directory
when WORK_DIR is not given; kept and reused when it is), makes a short clip of
moving shapes, pushes its frames one at a time through a
``vidtrt.VideoDetector`` and prints each frame's detections when they become
ready. With the key frame in the middle of each 4-frame segment (PSLA's
schedule), a segment's first frames wait for its key frame, so some pushes
return nothing and others several frames; ``flush()`` returns the rest.

The weights are seeded, not trained: the boxes show the machinery, not a
useful detector.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import vidtrt
from vidtrt.export.exporter import export_bundle
from vidtrt.runtime.synthetic import moving_shapes_clip


def print_detections(ready, when: str, top: int = 3) -> None:
    """Each frame's count of detections and its ``top`` best ones."""
    for detections in ready:
        print(f"frame {detections.frame_index} ({detections.stage}, out after {when}): {len(detections)} detections")
        best = np.argsort(-detections.scores, kind="stable")[:top]
        for k in best:
            x1, y1, x2, y2 = detections.boxes[k]
            name = detections.names[k]
            print(f"    {name:<14} {detections.scores[k]:.4f}  [{x1:7.2f} {y1:7.2f} {x2:7.2f} {y2:7.2f}]")


def main(argv: list[str]) -> int:
    work = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="vidtrt-example-"))
    bundle = work / "psla_small"
    if not (bundle / "manifest.json").exists():
        print(f"exporting psla_small to {bundle}")
        export_bundle("psla", bundle, config_name="psla_small", log=lambda _: None)

    detector = vidtrt.VideoDetector(bundle, backend="onnxruntime", precision="fp32", key_interval=4, key_placement="middle")
    print(detector)
    frames = moving_shapes_clip(num_frames=10, height=120, width=160, seed=0)  # BGR uint8 (120, 160, 3)
    for index, frame in enumerate(frames):
        print_detections(detector.push(frame), f"frame {index}")
    print_detections(detector.flush(), "the end")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The MEGA schedule over a backend.

Every pushed frame goes through ``frame`` once; its outputs stay in the
local cache while some key frame's local pool can still read them. Each key
frame runs ``head`` on pools assembled from fixed-size buffers: the local
pool (T_l slots in window order), the global pool (T_g slots) and the Long
Range Memory (per level a ring of T_m entries, oldest first, then empty
slots, masked). After the call every memory level gains what ``head``
returned for it (the oldest local frame's references of that stage).

Online: frame k is detected as it arrives; its local pool is the T_l frames
ending at k, its global pool a seeded reservoir sample of the frames so far
(each frame's outputs are copied into the slot it takes). Memory use is
constant in the video's length.

Offline: frame k is detected once frame k + tau has arrived (or at the end
of the video). The global pool is a seeded shuffle of the whole video, so
the stream must know the video's length and be able to read any frame:
``pipeline.stream(video_length=L, frame_source=f)`` (``f(i)`` returns frame
i preprocessed) runs in constant memory, reading the global frames it needs
(each once while it stays in the pool). Without them the stream keeps every
frame's outputs and detects the whole video at ``flush`` — memory grows with
the video then.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from ...models.mega import OnlineGlobalPool, local_window, look_ahead, offline_global_pool
from .base import FrameResult, Pipeline, PipelineStream

FRAME_OUTPUTS = ("proposals", "proposal_valid", "box_features")


class MegaPipeline(Pipeline):
    method_name = "mega"

    def __init__(self, backend, mode=None, local_frames=None, global_frames=None, memory_frames=None, shuffle_seed=None):
        super().__init__(
            backend, mode=mode, local_frames=local_frames, global_frames=global_frames, memory_frames=memory_frames, shuffle_seed=shuffle_seed
        )
        s = self.schedule
        self.mode, self.seed = s["mode"], s["shuffle_seed"]
        self.local_frames, self.global_frames, self.memory_frames = s["local_frames"], s["global_frames"], s["memory_frames"]
        head = backend.bundle.manifest.stages["head"]
        self.ref_proposals = head.input("local_proposals").shape[1]
        # Proposals per frame of each memory level, from the graph's inputs.
        self.level_rows = []
        names = {t.name for t in head.inputs}
        while f"memory{len(self.level_rows)}_proposals" in names:
            self.level_rows.append(head.input(f"memory{len(self.level_rows)}_proposals").shape[1])
        self.head_inputs = [t.name for t in head.inputs]

    def needs_random_access(self) -> bool:
        return self.mode == "offline"

    def stream(self, video_length: int | None = None, frame_source: Callable[[int], np.ndarray] | None = None) -> "MegaStream":
        """An independent video stream. Offline, give ``video_length`` and
        ``frame_source`` (random access to preprocessed frames) for constant
        memory; see the module docstring."""
        return MegaStream(self, video_length, frame_source)


class MegaStream(PipelineStream):
    def __init__(self, pipeline: MegaPipeline, video_length: int | None = None, frame_source=None):
        if (video_length is None) != (frame_source is None):
            raise ValueError("give both video_length and frame_source (offline streaming), or neither")
        if video_length is not None and video_length < 1:
            raise ValueError(f"video_length must be >= 1, got {video_length}")
        self.video_length = video_length
        self.frame_source = frame_source
        super().__init__(pipeline)

    @property
    def streaming(self) -> bool:
        """Offline with random access: constant memory, tau frames of latency."""
        return self.video_length is not None

    def reset(self) -> None:
        super().reset()
        p: MegaPipeline = self.pipeline
        self._outputs: dict[int, tuple] = {}  # frame → (proposals, valid, features), numpy, every proposal
        self._count = 0
        self._next_key = 0
        self._memory = [deque(maxlen=p.memory_frames) for _ in p.level_rows]
        self._online_pool = OnlineGlobalPool(p.global_frames, p.seed)
        self._online_slots: list[tuple | None] = [None] * p.global_frames
        self._global_cache: dict[int, tuple] = {}  # offline streaming: the pool's frames not in the local cache

    # ------------------------------------------------------------ frames in

    def push(self, index: int, image: np.ndarray) -> list[FrameResult]:
        p: MegaPipeline = self.pipeline
        if index != self._count:
            raise ValueError(f"frames must arrive in order 0, 1, 2, ...: expected {self._count}, got {index}")
        if self.streaming and index >= self.video_length:
            raise ValueError(f"frame {index} is past the video_length given ({self.video_length})")
        self._check_size(image)
        self._outputs[index] = self._run_frame(image)
        self._count += 1
        if p.mode == "online":
            slot = self._online_pool.add(index)
            if slot is not None:
                self._online_slots[slot] = self._compact(self._outputs[index])
            return [self._detect(index, None)]
        if not self.streaming:
            return []
        results = []
        while self._next_key + look_ahead(p.local_frames, "offline") <= index:
            results.append(self._detect(self._next_key, self.video_length))
        return results

    def flush(self) -> list[FrameResult]:
        """End of the video: offline, detects the frames still waiting."""
        p: MegaPipeline = self.pipeline
        results: list[FrameResult] = []
        if p.mode == "offline" and self._count:
            if self.streaming and self._count != self.video_length:
                count, told = self._count, self.video_length
                self.video_length = self.frame_source = None
                self.reset()
                raise ValueError(f"the video ended after {count} frames, but the stream was told video_length={told}")
            while self._next_key < self._count:
                results.append(self._detect(self._next_key, self._count))
        # video_length and frame_source described that video; the next one is buffered unless told.
        self.video_length = self.frame_source = None
        self.reset()
        return results

    def memory_size(self) -> dict[str, int]:
        """How many frames each buffer holds now (constant in the video's length)."""
        return {
            "local": len(self._outputs),
            "global": len(self._global_cache) + sum(s is not None for s in self._online_slots),
            "memory": max((len(m) for m in self._memory), default=0),
        }

    # ------------------------------------------------------------ internals

    def _run_frame(self, image) -> tuple:
        backend = self.pipeline.backend
        out = backend.run("frame", {"image": backend.from_numpy(image)})
        return tuple(backend.to_numpy(out[name]) for name in FRAME_OUTPUTS)

    def _compact(self, outputs: tuple) -> tuple:
        """What a frame brings to a pool: its first ref_proposals proposals."""
        rows = self.pipeline.ref_proposals
        return tuple(np.ascontiguousarray(a[:rows]) for a in outputs)

    def _global_parts(self, key: int, length: int | None) -> list[tuple | None]:
        p: MegaPipeline = self.pipeline
        if p.mode == "online":
            return list(self._online_slots)
        frames = offline_global_pool(key, length, p.global_frames, p.seed)
        if not self.streaming:
            return [self._compact(self._outputs[f]) for f in frames]
        cache = {}
        for f in frames:
            if f in self._global_cache:
                cache[f] = self._global_cache[f]
            elif f in self._outputs:
                cache[f] = self._compact(self._outputs[f])
            else:  # a frame not seen yet, or gone from the local cache: read it once
                image = np.asarray(self.frame_source(f), dtype=np.float32)
                if image.shape[2:] != self._image_hw:
                    raise ValueError(f"frame_source({f}) has size {image.shape[2:]}, the video's frames {self._image_hw}")
                cache[f] = self._compact(self._run_frame(image))
        self._global_cache = cache  # only the current pool's frames stay
        return [cache[f] for f in frames]

    @staticmethod
    def _slots(parts: list[tuple | None], count: int, like: tuple) -> list[np.ndarray]:
        """(proposals, valid, features) stacked over ``count`` slots; None and
        missing slots are zeros (invalid)."""
        filled = [part if part is not None else tuple(np.zeros_like(a) for a in like) for part in parts]
        filled += [tuple(np.zeros_like(a) for a in like)] * (count - len(filled))
        return [np.stack([part[i] for part in filled]) for i in range(3)]

    def _detect(self, key: int, length: int | None) -> FrameResult:
        p: MegaPipeline = self.pipeline
        backend = p.backend
        window = local_window(key, length, p.local_frames, p.mode)
        like = self._compact(self._outputs[key])
        local = self._slots([self._compact(self._outputs[f]) for f in window], p.local_frames, like)
        global_ = self._slots(self._global_parts(key, length), p.global_frames, like)
        inputs = {
            "image_size": np.array(self._image_hw, dtype=np.float32),
            "key_proposals": self._outputs[key][0], "key_valid": self._outputs[key][1], "key_features": self._outputs[key][2],
            "local_proposals": local[0], "local_valid": local[1], "local_features": local[2],
            "global_valid": global_[1], "global_features": global_[2],
        }  # fmt: skip
        for level, rows in enumerate(p.level_rows):
            template = tuple(a[:rows] for a in like)
            slots = self._slots(list(self._memory[level]), p.memory_frames, template)
            inputs.update({f"memory{level}_proposals": slots[0], f"memory{level}_valid": slots[1], f"memory{level}_features": slots[2]})
        out = backend.run("head", {name: backend.from_numpy(inputs[name]) for name in p.head_inputs})
        for level, rows in enumerate(p.level_rows):
            update = np.array(backend.to_numpy(out[f"memory{level}_update"]))
            self._memory[level].append((local[0][0, :rows].copy(), local[1][0, :rows].copy(), update))
        self._next_key = key + 1
        self._evict()
        return FrameResult(key, "head", self._detections(out))

    def _evict(self) -> None:
        """Drops the frame outputs no later key frame's local pool reads
        (offline without random access keeps them all: the global pool may
        read any frame)."""
        p: MegaPipeline = self.pipeline
        if p.mode == "offline" and not self.streaming:
            return
        oldest = local_window(self._next_key, None, p.local_frames, p.mode)[0]
        for frame in [f for f in self._outputs if f < oldest]:
            del self._outputs[frame]

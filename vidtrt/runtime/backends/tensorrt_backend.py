"""The ``tensorrt`` backend: the bundle's TensorRT engines, with every tensor
kept on the GPU between calls.

Written against the TensorRT 10/11 (and TensorRT-RTX) Python API and
cuda-python (``cuda.bindings.runtime``). No GPU existed where this was written: the code paths below are complete but have only been
executed against simulated TensorRT/CUDA modules in the tests (which check
the bookkeeping — buffers, ping-pong, graph caching, copies — not TensorRT).

How a call works (``run(stage, inputs)``):

1. Inputs are ``DeviceArray``s (or numpy arrays, uploaded first). Their
   shapes are checked against the engine's optimisation profile and set on
   the stage's execution context.
2. Outputs get device buffers. Carried state follows the bundle's binding
   plan (``runtime/binding.py``): each stream's state lives in a *state group*
   holding the plan's copies per state; a stage that reads and writes a state
   (PSLA ``key``) writes the copy it is not reading (ping-pong), so an engine
   never reads and writes one buffer in a call. A copy still referenced by
   the caller is never overwritten — the output then gets a fresh buffer.
   Results (detections) get fresh buffers from a pool.
3. ``execute_async_v3`` on the backend's stream, between two CUDA events
   whose elapsed time lands in ``timings[stage]`` (milliseconds).

Memory comes from a pool that recycles freed buffers by size, so a video
runs without a cudaMalloc per frame; every operation is ordered on one
stream, so a buffer returned to the pool while a kernel still reads it can
only be reused by work queued after that kernel.

With ``cuda_graphs=True`` each (stage, input shapes, state addresses) is
captured once into a CUDA graph, on a dedicated execution context (a graph
freezes the context's shapes and addresses), after one ordinary execution;
per-call inputs and results pass through fixed staging buffers (device-to-
device copies). Ping-pong makes two graphs per stage and shape. A stage that
cannot be captured falls back to ordinary execution, with a warning.
"""

from __future__ import annotations

import collections
import warnings
import weakref
from typing import Any, Mapping

import numpy as np

from ...core.bundle import Bundle, BundleError
from ..binding import BindingPlan
from .base import Backend

ALIGNMENT = 256  # TensorRT wants I/O addresses aligned; cudaMalloc gives 256 bytes
MAX_GRAPHS = 32  # per backend; evicted least recently used
MAX_PENDING_TIMINGS = 256  # calls whose CUDA events are read back lazily


def _trt():
    import tensorrt

    return tensorrt


def _cudart():
    from cuda.bindings import runtime

    return runtime


def _check(result):
    from ...tensorrt import cuda_check

    return cuda_check(result)


def _environment(device: int, runtime: str = "tensorrt"):
    from ...tensorrt.compat import current_environment

    return current_environment(device, runtime)


# ---------------------------------------------------------------- memory


class _Allocation:
    """One pooled device buffer; returns itself to the pool when collected."""

    __slots__ = ("ptr", "size", "pool", "__weakref__")

    def __init__(self, ptr: int, size: int, pool: "_DevicePool"):
        self.ptr, self.size, self.pool = ptr, size, pool

    def __del__(self):
        pool = self.pool
        if pool is not None and not pool.closed:
            pool.free.setdefault(self.size, []).append(self.ptr)


class _DevicePool:
    def __init__(self, cudart):
        self.cudart = cudart
        self.free: dict[int, list[int]] = {}
        self.owned: list[int] = []
        self.closed = False

    def allocate(self, nbytes: int) -> _Allocation:
        size = max(ALIGNMENT, -(-int(nbytes) // ALIGNMENT) * ALIGNMENT)
        bucket = self.free.get(size)
        if bucket:
            return _Allocation(bucket.pop(), size, self)
        ptr = int(_check(self.cudart.cudaMalloc(size)))
        self.owned.append(ptr)
        return _Allocation(ptr, size, self)

    def close(self) -> None:
        """Frees every buffer; the caller has synchronised the stream."""
        if self.closed:
            return
        self.closed = True
        for ptr in self.owned:
            self.cudart.cudaFree(ptr)
        self.owned.clear()
        self.free.clear()


class DeviceArray:
    """A tensor in GPU memory: address, shape, numpy dtype and the object that
    keeps the memory alive (a pooled allocation or a state group)."""

    __slots__ = ("ptr", "shape", "dtype", "owner", "slot", "__weakref__")

    def __init__(self, ptr: int, shape, dtype, owner, slot=None):
        self.ptr = int(ptr)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.owner = owner
        self.slot = slot  # (state group, state, copy index) for plan-managed state

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"DeviceArray(0x{self.ptr:x}, shape={self.shape}, dtype={self.dtype})"


class _StateGroup:
    """The plan's state copies of one stream, allocated on first use.

    Copies are handed out as DeviceArrays; a weak reference to the last one
    handed out per copy tells whether the caller still holds it."""

    def __init__(self, pool: _DevicePool):
        self.pool = pool
        self.copies: dict[tuple[str, int], tuple[_Allocation, tuple, np.dtype]] = {}
        self.handed: dict[tuple[str, int], weakref.ref] = {}

    def usable(self, state: str, index: int, shape, dtype, busy: set[int]) -> bool:
        key = (state, index)
        if key in self.copies:
            alloc, have_shape, have_dtype = self.copies[key]
            if have_shape != tuple(shape) or have_dtype != np.dtype(dtype) or alloc.ptr in busy:
                return False
        ref = self.handed.get(key)
        return ref is None or ref() is None

    def array(self, state: str, index: int, shape, dtype) -> DeviceArray:
        key = (state, index)
        if key not in self.copies:
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            self.copies[key] = (self.pool.allocate(nbytes), tuple(shape), np.dtype(dtype))
        alloc = self.copies[key][0]
        arr = DeviceArray(alloc.ptr, shape, dtype, self, slot=(self, state, index))
        self.handed[key] = weakref.ref(arr)
        return arr


# ---------------------------------------------------------------- graphs


class _Graph:
    """A captured stage call and the context it was captured on (the graph's
    kernels use that context's resources, so it lives as long as the graph)."""

    __slots__ = ("context", "exec")

    def __init__(self, context, graph_exec):
        self.context, self.exec = context, graph_exec


class TensorRTBackend(Backend):
    """Standard TensorRT (10.8+ / 11). ``TensorRTRTXBackend`` below is the same
    code on TensorRT-RTX's module: their runtime APIs agree on everything used here."""

    name = "tensorrt"
    runtime = "tensorrt"

    def __init__(
        self, bundle: Bundle, precision: str = "fp32", device: int = 0, cuda_graphs: bool = False, stages=None
    ):
        from ...tensorrt import load_plugin_library, require_gpu
        from ...tensorrt.compat import select_engine_set
        from ...tensorrt.flavours import require

        require(self.runtime, f"the {self.name} backend")
        require_gpu(f"the {self.name} backend", device)
        if self.runtime == "tensorrt" and precision not in bundle.manifest.engines:
            built = ", ".join(bundle.manifest.engines) or "none"
            raise BundleError(
                f"bundle {bundle.directory} has no {precision} TensorRT engines (built: {built}); "
                f"build them with `vidtrt build {bundle.directory} --precision {precision}`"
            )
        # Compatibility first: deserialising a foreign engine fails with an
        # opaque TensorRT error, or crashes inside a plugin.
        entry = select_engine_set(
            bundle.manifest.engines, self.runtime, precision, _environment(device, self.runtime), bundle=str(bundle.directory)
        )

        self._pending: list[tuple[str, Any, Any]] = []  # (stage, start event, end event) not yet resolved
        super().__init__(bundle)
        trt, cudart = self._trt_module(), _cudart()
        self.trt, self.cudart = trt, cudart
        self.precision, self.device, self.cuda_graphs = precision, device, cuda_graphs
        _check(cudart.cudaSetDevice(device))
        if entry.get("plugin_library_sha256"):
            load_plugin_library()
        self.plan = BindingPlan.from_manifest(bundle.manifest)
        self._runtime = trt.Runtime(self._logger())

        wanted = list(stages or bundle.stages)
        self.engines = {}
        for stage in wanted:
            rel = entry["files"].get(stage)
            if rel is None:
                raise BundleError(
                    f"the {precision} {self.runtime} engine set of {bundle.directory} has no {stage!r} engine; "
                    f"rebuild it with `vidtrt build` (see --help)"
                )
            engine = self._runtime.deserialize_cuda_engine(bundle.path(rel).read_bytes())
            if engine is None:
                raise RuntimeError(f"TensorRT could not deserialise {bundle.path(rel)} (see the TensorRT log above)")
            self._check_io(stage, engine)
            self.engines[stage] = engine

        self._stream = _check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        self._stream_handle = int(self._stream)
        self._pool = _DevicePool(cudart)
        self._graphs: collections.OrderedDict = collections.OrderedDict()
        self._closed = False
        # Registered before anything else can fail, so the stream and memory
        # are released even when construction stops half way.
        self._finalizer = weakref.finalize(self, TensorRTBackend._release, cudart, self._stream, self._pool, self._graphs)
        self._events: list = []
        self._uncapturable: set = set()
        self._staging: dict[tuple, _Allocation] = {}
        # Every context runs on the one stream, never two at once, so all of
        # them share one scratch area sized for the hungriest engine.
        scratch_size = max(int(e.device_memory_size_v2) for e in self.engines.values())
        self._scratch = self._pool.allocate(max(scratch_size, 1))
        self._contexts = {stage: self._new_context(stage) for stage in self.engines}
        self._context_shapes: dict[str, dict[str, tuple]] = {stage: {} for stage in self.engines}

    # ------------------------------------------------------------ setup

    def _trt_module(self):
        return _trt()

    def _logger(self):
        from ...tensorrt import logger

        return logger()

    def _numpy_dtype(self, trt_dtype) -> np.dtype:
        """INT64 (detection labels), BOOL, FP16 ... as numpy: buffers are sized from it."""
        return np.dtype(self.trt.nptype(trt_dtype))

    def _check_io(self, stage: str, engine) -> None:
        trt = self.trt
        spec = self.bundle.stages[stage]
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        outputs = set(names) - inputs
        want_in, want_out = {t.name for t in spec.inputs}, {t.name for t in spec.outputs}
        if inputs != want_in or outputs != want_out:
            raise BundleError(
                f"the {stage!r} engine has inputs {sorted(inputs)} and outputs {sorted(outputs)}, but the manifest "
                f"says {sorted(want_in)} and {sorted(want_out)}: it was built from another graph. Rebuild the engines."
            )

    def _new_context(self, stage: str):
        trt = self.trt
        context = self.engines[stage].create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if context is None:
            raise RuntimeError(f"TensorRT could not create an execution context for stage {stage!r}")
        context.set_device_memory(self._scratch.ptr, self._scratch.size)
        return context

    # ------------------------------------------------------------ arrays

    def _empty(self, shape, dtype) -> DeviceArray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        alloc = self._pool.allocate(nbytes)
        return DeviceArray(alloc.ptr, shape, dtype, alloc)

    def from_numpy(self, array: np.ndarray) -> DeviceArray:
        """Copies to the GPU. The source may be pageable: CUDA stages a
        pageable source before cudaMemcpyAsync returns, so it can be dropped."""
        array = np.ascontiguousarray(array)
        out = self._empty(array.shape, array.dtype)
        if array.nbytes:
            kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _check(self.cudart.cudaMemcpyAsync(out.ptr, array.ctypes.data, array.nbytes, kind, self._stream))
        return out

    def to_numpy(self, value) -> np.ndarray:
        if isinstance(value, np.ndarray):
            return value
        out = np.empty(value.shape, dtype=value.dtype)
        if out.nbytes:
            kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            _check(self.cudart.cudaMemcpyAsync(out.ctypes.data, value.ptr, out.nbytes, kind, self._stream))
        _check(self.cudart.cudaStreamSynchronize(self._stream))
        return out

    def zeros(self, shape, dtype: str) -> DeviceArray:
        out = self._empty(tuple(int(d) for d in shape), dtype)
        if out.nbytes:
            _check(self.cudart.cudaMemsetAsync(out.ptr, 0, out.nbytes, self._stream))
        return out

    def _copy(self, dst: int, src: int, nbytes: int) -> None:
        if nbytes and dst != src:
            kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
            _check(self.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream))

    # ------------------------------------------------------------ timing

    @property
    def timings(self) -> dict[str, list[float]]:
        """Milliseconds of GPU time per call and stage (CUDA events). Reading
        it waits for the calls still in flight."""
        self._resolve_timings()
        return self._timings

    @timings.setter
    def timings(self, value) -> None:
        self._timings = value

    def reset_timings(self) -> None:
        self._resolve_timings()
        self._timings.clear()

    def _event(self):
        if self._events:
            return self._events.pop()
        return _check(self.cudart.cudaEventCreateWithFlags(self.cudart.cudaEventDefault))

    def _resolve_timings(self) -> None:
        for stage, start, end in self._pending:
            _check(self.cudart.cudaEventSynchronize(end))
            self._timings[stage].append(float(_check(self.cudart.cudaEventElapsedTime(start, end))))
            self._events += [start, end]
        self._pending.clear()

    # ------------------------------------------------------------ running

    def run(self, stage: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if self._closed:
            raise RuntimeError("this tensorrt backend was closed")
        spec = self.bundle.stages.get(stage)
        if spec is None:
            raise KeyError(f"bundle has no stage {stage!r}; it has {', '.join(self.bundle.stages)}")
        if stage not in self.engines:
            raise KeyError(f"stage {stage!r} was not loaded; this backend has {', '.join(self.engines)}")
        missing = [t.name for t in spec.inputs if t.name not in inputs]
        if missing:
            raise ValueError(f"stage {stage!r} needs inputs {missing}")
        start, end = self._event(), self._event()
        try:
            _check(self.cudart.cudaEventRecord(start, self._stream))
            outputs = self._run(stage, inputs)
            _check(self.cudart.cudaEventRecord(end, self._stream))
        except BaseException:
            self._events += [start, end]
            raise
        self._pending.append((stage, start, end))
        if len(self._pending) > MAX_PENDING_TIMINGS:
            self._resolve_timings()  # bounds the events alive when nobody reads timings
        return outputs

    def _device_inputs(self, stage: str, inputs: Mapping[str, Any]) -> dict[str, DeviceArray]:
        engine = self.engines[stage]
        out = {}
        for t in self.bundle.stages[stage].inputs:
            value, want = inputs[t.name], self._numpy_dtype(engine.get_tensor_dtype(t.name))
            if isinstance(value, DeviceArray):
                if value.dtype != want:
                    raise ValueError(f"stage {stage!r} input {t.name!r} must be {want}, got a {value.dtype} device array")
            else:
                value = np.asarray(value)
                if value.dtype != want:
                    if value.dtype.kind != want.kind:
                        raise ValueError(f"stage {stage!r} input {t.name!r} must be {want}, got {value.dtype}")
                    value = value.astype(want)
                value = self.from_numpy(value)
            out[t.name] = value
        return out

    def _set_shapes(self, stage: str, context, arrays: Mapping[str, DeviceArray], known: dict) -> None:
        """Checks every input's shape against the engine (static shape, or the
        optimisation profile's range) and sets the dynamic ones on ``context``;
        ``known`` remembers what the context already has."""
        engine = self.engines[stage]
        for name, arr in arrays.items():
            if known.get(name) == arr.shape:
                continue
            static = tuple(engine.get_tensor_shape(name))
            if all(d >= 0 for d in static):
                if arr.shape != static:
                    raise ValueError(f"stage {stage!r} input {name!r} must have shape {static}, got {arr.shape}")
            else:
                lo, _, hi = (tuple(d) for d in engine.get_tensor_profile_shape(name, 0))
                if len(arr.shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, arr.shape, hi)):
                    raise ValueError(
                        f"stage {stage!r} input {name!r} has shape {arr.shape}, outside the engine's profile "
                        f"{lo} … {hi}; rebuild the engines with a profile covering it (vidtrt build)"
                    )
                if not context.set_input_shape(name, arr.shape):
                    raise ValueError(f"TensorRT refused shape {arr.shape} for stage {stage!r} input {name!r}")
            known[name] = arr.shape

    def _output_shapes(self, stage: str, context) -> dict[str, tuple]:
        engine = self.engines[stage]
        shapes = {}
        for t in self.bundle.stages[stage].outputs:
            shape = tuple(context.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"stage {stage!r} output {t.name!r} has an undetermined shape {shape}")
            shapes[t.name] = (shape, self._numpy_dtype(engine.get_tensor_dtype(t.name)))
        return shapes

    def _state_outputs(self, stage: str, arrays: Mapping[str, DeviceArray], out_shapes) -> dict[str, DeviceArray]:
        """Buffers for the state this call writes, from the plan: the copy after
        the one being read, in the caller's state group; a fresh buffer when
        that copy is busy (still held by the caller, or an input of this call)."""
        plan = self.plan.stages[stage]
        reads = {plan.state_inputs[n]: arrays[n] for n in plan.state_inputs}
        groups = [a.slot[0] for a in reads.values() if a.slot is not None]
        group = groups[0] if groups else None
        busy = {a.ptr for a in arrays.values()}
        out = {}
        for name, state in plan.state_outputs.items():
            shape, dtype = out_shapes[name]
            current = reads.get(state)
            writes = current.slot[2] if current is not None and current.slot is not None and current.slot[0] is group else 0
            if group is None:
                group = _StateGroup(self._pool)
            index = self.plan.write_index(state, writes)
            if group.usable(state, index, shape, dtype, busy):
                out[name] = group.array(state, index, shape, dtype)
            else:
                out[name] = self._empty(shape, dtype)
        return out

    def _run(self, stage: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        arrays = self._device_inputs(stage, inputs)
        context = self._contexts[stage]
        self._set_shapes(stage, context, arrays, self._context_shapes[stage])
        out_shapes = self._output_shapes(stage, context)
        states = self._state_outputs(stage, arrays, out_shapes)
        plan = self.plan.stages[stage]

        if self.cuda_graphs and self._graphable(stage, arrays, states):
            return self._run_graph(stage, arrays, states, out_shapes)

        outputs = dict(states)
        for name in plan.results:
            outputs[name] = self._empty(*out_shapes[name])
        self._enqueue(stage, context, {**arrays, **outputs})
        return {t.name: outputs[t.name] for t in self.bundle.stages[stage].outputs}

    def _enqueue(self, stage: str, context, tensors: Mapping[str, DeviceArray]) -> bool:
        for name, arr in tensors.items():
            if not context.set_tensor_address(name, arr.ptr):
                raise RuntimeError(f"TensorRT refused the address of stage {stage!r} tensor {name!r}")
        if not context.execute_async_v3(self._stream_handle):
            raise RuntimeError(f"TensorRT failed to enqueue stage {stage!r} (see the TensorRT log above)")
        return True

    # ------------------------------------------------------------ CUDA graphs

    def _graphable(self, stage: str, arrays, states) -> bool:
        """Only when every state tensor is a plan-managed copy: their addresses
        then repeat (ping-pong), so a handful of graphs serve a whole video."""
        plan = self.plan.stages[stage]
        shapes = tuple(sorted((n, a.shape) for n, a in arrays.items()))
        if (stage, shapes) in self._uncapturable:
            return False
        state_arrays = [arrays[n] for n in plan.state_inputs] + list(states.values())
        return all(a.slot is not None for a in state_arrays)

    def _staging_buffer(self, buffer: str, shape, dtype) -> DeviceArray:
        key = (buffer, tuple(shape), np.dtype(dtype).str)
        alloc = self._staging.get(key)
        if alloc is None:
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            alloc = self._staging[key] = self._pool.allocate(nbytes)
        return DeviceArray(alloc.ptr, shape, dtype, alloc)

    def _run_graph(self, stage: str, arrays, states, out_shapes) -> dict[str, Any]:
        plan = self.plan.stages[stage]
        bindings = self.plan.bindings(stage)
        shapes = tuple(sorted((n, a.shape) for n, a in arrays.items()))
        state_ptrs = tuple((n, arrays[n].ptr) for n in plan.state_inputs) + tuple((n, a.ptr) for n, a in states.items())
        key = (stage, shapes, state_ptrs)

        # Per-call inputs and results go through fixed staging buffers (the
        # plan's shared per-call buffers), so the graph's addresses stay put.
        staged_in = {n: self._staging_buffer(bindings[n].buffer, arrays[n].shape, arrays[n].dtype) for n in plan.per_call}
        staged_out = {n: self._staging_buffer(bindings[n].buffer, *out_shapes[n]) for n in plan.results}
        for name, dst in staged_in.items():
            self._copy(dst.ptr, arrays[name].ptr, dst.nbytes)
        tensors = {**staged_in, **{n: arrays[n] for n in plan.state_inputs}, **states, **staged_out}

        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            _check(self.cudart.cudaGraphLaunch(graph.exec, self._stream))
        else:
            inputs = {n: tensors[n] for n in arrays}
            graph = self._capture(stage, inputs, tensors, shapes)  # also executes this call once
            if graph is not None:
                self._graphs[key] = graph
                while len(self._graphs) > MAX_GRAPHS:
                    _, old = self._graphs.popitem(last=False)
                    self._destroy_graph(old)

        outputs = dict(states)
        for name in plan.results:
            outputs[name] = self._empty(*out_shapes[name])
            self._copy(outputs[name].ptr, staged_out[name].ptr, outputs[name].nbytes)
        return {t.name: outputs[t.name] for t in self.bundle.stages[stage].outputs}

    def _capture(self, stage: str, inputs, tensors: Mapping[str, DeviceArray], shapes) -> _Graph | None:
        """Runs the stage once on a fresh context (that run is this call's
        result, and it performs TensorRT's deferred per-shape setup, which
        must not be captured), then captures the same enqueue into a graph."""
        cudart = self.cudart
        context = self._new_context(stage)
        self._set_shapes(stage, context, inputs, {})
        self._enqueue(stage, context, tensors)
        _check(cudart.cudaStreamSynchronize(self._stream))
        _check(cudart.cudaStreamBeginCapture(self._stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        captured = context.execute_async_v3(self._stream_handle)
        err, graph = cudart.cudaStreamEndCapture(self._stream)
        have_graph = int(err) == 0 and graph is not None and int(graph) != 0
        if not captured or not have_graph:
            if have_graph:  # TensorRT reported a failure inside a valid capture
                cudart.cudaGraphDestroy(graph)
            cudart.cudaGetLastError()  # clear the capture error so later calls do not report it
            self._uncapturable.add((stage, shapes))
            warnings.warn(
                f"stage {stage!r} could not be captured into a CUDA graph; it runs without one", RuntimeWarning, stacklevel=4
            )
            return None
        graph_exec = _check(cudart.cudaGraphInstantiate(graph, 0))
        _check(cudart.cudaGraphDestroy(graph))
        return _Graph(context, graph_exec)

    def _destroy_graph(self, graph: _Graph) -> None:
        _check(self.cudart.cudaStreamSynchronize(self._stream))
        self.cudart.cudaGraphExecDestroy(graph.exec)

    # ------------------------------------------------------------ teardown

    def close(self) -> None:
        """Waits for the stream, then frees graphs, buffers and the stream.
        DeviceArrays from this backend are invalid afterwards."""
        if self._closed:
            return
        self._resolve_timings()
        self._closed = True
        self._contexts.clear()
        self._finalizer()

    @staticmethod
    def _release(cudart, stream, pool: _DevicePool, graphs) -> None:
        cudart.cudaStreamSynchronize(stream)
        for graph in graphs.values():
            cudart.cudaGraphExecDestroy(graph.exec)
        graphs.clear()
        pool.close()
        cudart.cudaStreamDestroy(stream)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TensorRTRTXBackend(TensorRTBackend):
    """TensorRT-RTX engines (``vidtrt build --runtime tensorrt-rtx --sm ...``):
    the set built for this GPU's compute capability, custom ops as their ONNX
    functions (no plugin library). Like the tensorrt backend, written against
    the Python API and never run here (no GPU)."""

    name = "tensorrt-rtx"
    runtime = "tensorrt-rtx"

    def _trt_module(self):
        from ...tensorrt.flavours import module

        return module("tensorrt-rtx")

    def _logger(self):
        from ...tensorrt.flavours import capturing_logger

        return capturing_logger("tensorrt-rtx").trt_logger

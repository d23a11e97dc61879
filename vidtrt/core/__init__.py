"""The contract every layer shares: the bundle (manifest, stage I/O, state
wiring, files), frame preprocessing and detection matching. Export writes
bundles, the runtime and the TensorRT layer read them; nothing here imports
any of those."""

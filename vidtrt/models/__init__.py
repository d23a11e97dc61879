"""The networks of the methods: backbones, heads, detectors and their configs,
checkpoint loading. Named configs belong to each method (vidtrt.methods)."""

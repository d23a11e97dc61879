"""Calibration: recording what each stage really receives, for INT8."""

"""Detection evaluation (mAP at an IoU threshold)."""

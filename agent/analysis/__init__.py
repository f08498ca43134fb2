"""Analysis stage: turns a raw frame into an `Analysis` (zone activity, detections, faults)."""

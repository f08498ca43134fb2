"""On-device detectors (ONNX Runtime): faces, persons and private objects.

One plugin per file, listed in the explicit registry (`registry.py`); models
come from the verified cache described by `models/MANIFEST.tsv`.
"""

"""On-device detectors (ONNX Runtime): faces, persons and private objects.

One plugin per file, listed in the explicit registry (`registry.py`); models
come from the verified cache described by `models/MANIFEST.tsv`.
"""

# agent.config imports agent.detect.config, which subclasses agent.config.StrictModel;
# importing agent.config first makes either import order work.
import agent.config  # noqa: F401

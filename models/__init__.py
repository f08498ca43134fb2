"""Detector models: the manifest (`MANIFEST.tsv`) and the verified install cache (`install.py`).

Weights are never committed; they are installed into the model cache and
checked against the manifest's sha256 before every load.
"""

"""The committed epa-clip vectors still parse, verify and decrypt; deterministic parts regenerate byte-identically."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

VECTORS = Path(__file__).resolve().parent / "vectors"


def _gen():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_vectors", VECTORS / "gen_vectors.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_vectors_check() -> None:
    assert _gen().check() == []


def test_vector_set_is_complete() -> None:
    doc = json.loads((VECTORS / "clips.json").read_text())
    errors = {n["error"] for n in doc["negative"]}
    assert errors == {"TruncatedClip", "TamperedClip", "MalformedEnvelope", "BadSignature", "WrongRecipient"}
    assert {c["payload_len"] for c in doc["clips"]} >= {0, 100}
    assert any(c["chunk_count"] > 2 for c in doc["clips"])
    keys = json.loads((VECTORS / "keys.json").read_text())
    assert keys["hub"]["public"].startswith("epa1hub:")
    assert all(d["public"].startswith("epa1pub:") for d in keys["devices"].values())

"""Config contract: clear errors with key paths and YAML lines; the example config validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config, parse_config_text
from agent.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
cameras:
  - id: hallway
    source: video.mp4
    zones:
      - name: bedroom_door
        points: [[0.10, 0.10], [0.40, 0.10], [0.40, 0.90], [0.10, 0.90]]
        action: mask
        style: solid
"""


def err(text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        parse_config_text(text, "config.yaml")
    return str(ei.value)


def test_minimum_config_from_issue_is_valid() -> None:
    cfg = parse_config_text(GOOD)
    assert cfg.cameras[0].zones[0].name == "bedroom_door"


def test_malformed_yaml_names_line() -> None:
    msg = err("cameras:\n  - id: a\n    source: [unclosed\n")
    assert "malformed YAML" in msg and "config.yaml:" in msg


def test_unknown_key_names_path_and_line() -> None:
    msg = err(GOOD + "        colour: red\n")
    assert "cameras[0].zones[0].colour: unknown key 'colour' (config.yaml:9)" in msg


def test_each_problem_is_its_own_line_with_key_and_line() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config_text(GOOD + "        colour: red\ncamras: []\n", "config.yaml")
    assert len(e.value.problems) == 2
    assert all("(config.yaml:" in p for p in e.value.problems)
    assert any(p.startswith("cameras[0].zones[0].colour: unknown key") for p in e.value.problems)
    # One cause: the message is the one problem.
    with pytest.raises(ConfigError) as e:
        parse_config_text("", "config.yaml")
    assert e.value.problems == (str(e.value),)


def test_unknown_top_level_key() -> None:
    assert "camras: unknown key" in err(GOOD + "camras: []\n")


def test_polygon_too_few_points() -> None:
    text = GOOD.replace("[[0.10, 0.10], [0.40, 0.10], [0.40, 0.90], [0.10, 0.90]]", "[[0.1, 0.1], [0.2, 0.2]]")
    assert "cameras[0].zones[0].points: polygon needs at least 3 points, got 2 (config.yaml:6)" in err(text)


def test_polygon_out_of_range() -> None:
    text = GOOD.replace("[0.40, 0.90]", "[1.40, 0.90]")
    msg = err(text)
    assert "cameras[0].zones[0].points" in msg and "out of range" in msg and "config.yaml:6" in msg


def test_polygon_self_intersecting() -> None:
    text = GOOD.replace("[[0.10, 0.10], [0.40, 0.10], [0.40, 0.90], [0.10, 0.90]]",
                        "[[0.1, 0.1], [0.4, 0.9], [0.4, 0.1], [0.1, 0.9]]")
    assert "self-intersecting" in err(text)


def test_duplicate_camera_ids() -> None:
    text = GOOD + "  - id: hallway\n    source: other.mp4\n"
    msg = err(text)
    assert "cameras: duplicate camera id 'hallway'" in msg and "config.yaml:1" in msg


def test_duplicate_yaml_keys_are_errors() -> None:
    assert "config.yaml" in err("cameras: []\ncameras: []\n")


def test_empty_and_non_mapping() -> None:
    assert "empty" in err("")
    assert "top level must be a mapping" in err("- a\n- b\n")


def test_bad_enum_and_mode_zone_reference() -> None:
    assert "cameras[0].zones[0].style" in err(GOOD.replace("style: solid", "style: fuzzy"))
    text = GOOD + "    modes:\n      home:\n        zones: {nope: withhold}\n"
    assert "unknown zone 'nope'" in err(text)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_example_configs_validate() -> None:
    examples = sorted((REPO / "config").glob("*.yaml"))
    assert examples, "config/ must hold example configs"
    for f in examples:
        load_config(f)


def test_every_config_field_has_a_description() -> None:
    from pydantic import BaseModel

    from agent import config as c

    seen: set[type] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            for t in _types(field.annotation):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    walk(t)

    walk(c.AgentConfig)
    assert len(seen) > 5


def _types(ann: object) -> list[object]:
    import typing

    args = typing.get_args(ann)
    if not args:
        return [ann]
    out: list[object] = []
    for a in args:
        out.extend(_types(a))
    return out


# -- Hypothesis: the parser never fails with anything but a ConfigError ---------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-2, 2) | st.just(float("nan")),
                          st.text(max_size=8))
_yaml_values = st.recursive(
    _yaml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["cameras", "id", "source", "zones", "name", "points", "action", "style", "modes",
                         "sinks", "type", "path", "plaintext", "x"]), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(_yaml_values)
def test_arbitrary_documents_give_config_errors_only(doc: object) -> None:
    import json

    text = json.dumps(doc)  # JSON is YAML
    try:
        parse_config_text(text)
    except ConfigError as e:
        assert str(e)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_gives_config_errors_only(text: str) -> None:
    try:
        parse_config_text(text)
    except ConfigError as e:
        assert str(e)

"""Health documents and their Home Assistant sensors: device classes, units, expiry."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from agent.clock import FakeClock
from agent.core.health import CameraSample, HealthTracker
from agent.mqtt.discovery import discovery_payload
from agent.mqtt.health import camera_document, disk_free, hub_document, queued_deliveries
from agent.topics import Topics

T = Topics("epa-test")
HUB_ID = "0123456789abcdef"


def _health():  # type: ignore[no-untyped-def]
    t = HealthTracker(0.0, 1_790_000_000.0)
    t.observe([CameraSample("porch", True, 0, 0, {})], 0.0)
    return t.observe([CameraSample("porch", True, 100, 20, {"zone:door": 15, "mode:away:withhold_all": 5}, 0.42, 2)],
                     10.0, queued_clips=3, disk_free_bytes=7_500_000_000, encoder="libx264")


def test_health_documents() -> None:
    h = _health()
    hub = hub_document(h)
    assert hub["heartbeat"] == "2026-09-21T14:13:30+00:00"  # ISO 8601 with a zone: HA's timestamp class
    assert hub["healthy"] is True and hub["problems"] == [] and hub["cameras"] == ["porch"]
    assert hub["disk_free_mb"] == 7500.0 and hub["queued_clips"] == 3 and hub["encoder"] == "libx264"
    cam = camera_document(h.cameras[0])
    assert cam["fps"] == 10.0 and cam["analysis_lag_s"] == 0.42 and cam["queued_frames"] == 2
    assert cam["withheld_by_reason"] == {"zone:door": 15, "mode:away:withhold_all": 5}
    assert cam["top_withheld_reason"] == "zone:door"
    json.dumps(hub), json.dumps(cam)  # plain JSON


def test_discovery_health_sensors_have_classes_units_and_expiry() -> None:
    doc = discovery_payload(T, HUB_ID, [("porch", "Porch")], health_interval_s=30)
    c = doc["components"]
    assert c["health_heartbeat"]["device_class"] == "timestamp"
    assert c["health_heartbeat"]["state_topic"] == T.health == "epa-test/health"
    assert (c["health_disk_free"]["device_class"], c["health_disk_free"]["unit_of_measurement"]) == ("data_size", "MB")
    assert c["health_queued_clips"]["state_class"] == "measurement"
    assert "device_class" not in c["health_encoder"] and "unit_of_measurement" not in c["health_encoder"]
    assert c["health_problem"]["platform"] == "binary_sensor" and c["health_problem"]["device_class"] == "problem"
    assert c["porch_fps"]["unit_of_measurement"] == "fps" and c["porch_fps"]["state_class"] == "measurement"
    assert c["porch_fps"]["state_topic"] == T.camera_health("porch") == "epa-test/camera/porch/health"
    lag = c["porch_analysis_lag"]
    assert (lag["device_class"], lag["unit_of_measurement"], lag["state_class"]) == ("duration", "s", "measurement")
    assert c["porch_queued_frames"]["state_class"] == "measurement"
    assert c["porch_withheld_reason"]["json_attributes_topic"] == T.camera_health("porch")
    health = [v for k, v in c.items() if k.startswith("health_") or k.removeprefix("porch_") in
              ("fps", "analysis_lag", "queued_frames", "withheld_reason")]
    assert len(health) == 9
    assert all(v["expire_after"] == 91 for v in health)  # three intervals: a silent hub goes unavailable
    ids = [v["unique_id"] for v in c.values()]
    assert len(ids) == len(set(ids))
    # Without an interval (no health publisher), no health sensors.
    assert not any(k.startswith("health_") for k in discovery_payload(T, HUB_ID, [("porch", "Porch")])["components"])


def test_value_templates_read_the_documents() -> None:
    """Render each template as Home Assistant would (Jinja2 with `value_json`)."""
    h = _health()
    docs = {T.health: hub_document(h), T.camera_health("porch"): camera_document(h.cameras[0])}
    env = jinja2.Environment()
    env.filters["tojson"] = json.dumps
    c = discovery_payload(T, HUB_ID, [("porch", "Porch")], health_interval_s=30)["components"]

    def render(key: str, field: str = "value_template") -> str:
        return env.from_string(c[key][field]).render(value_json=docs[c[key]["state_topic"]]).strip()

    assert render("health_heartbeat") == "2026-09-21T14:13:30+00:00"
    assert render("health_disk_free") == "7500.0"
    assert render("health_encoder") == "libx264"
    assert render("health_problem") == "OFF"
    assert render("porch_fps") == "10.0"
    assert render("porch_analysis_lag") == "0.42"
    assert render("porch_withheld_reason") == "zone:door"
    assert render("porch_under_load_frames") == "0"
    shed = camera_document(HealthTracker(0.0, 0.0).observe(
        [CameraSample("porch", True, 30, 1, {}, under_load=14)], 1.0).cameras[0])
    assert env.from_string(c["porch_under_load_frames"]["value_template"]).render(value_json=shed).strip() == "14"
    assert c["porch_under_load_frames"]["state_class"] == "total_increasing"
    assert json.loads(render("porch_withheld_reason", "json_attributes_template")) == {
        "zone:door": 15, "mode:away:withhold_all": 5}


def test_disk_free_and_queued_clips_of_a_data_dir(tmp_path: Path) -> None:
    free = disk_free(tmp_path)
    assert free is not None and free > 0
    assert disk_free(tmp_path / "missing") is None
    assert queued_deliveries(tmp_path, FakeClock()) == 0  # no outbox: nothing queued, none created
    assert not (tmp_path / "outbox").exists()

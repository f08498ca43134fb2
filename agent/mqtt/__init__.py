"""MQTT for the hub: topics, client, durable outbox, Home Assistant discovery.

Invariant: nothing published here carries images, plaintext video or secret
keys; the broker is treated as untrusted (everything that matters is signed).
"""

# agent.config imports agent.mqtt.config, which subclasses agent.config.StrictModel;
# importing agent.config first makes either import order work.
import agent.config  # noqa: F401

"""MQTT for the hub, transport only: topics, the client, the durable event outbox, Home Assistant
discovery, and the service that wires access requests and events to the broker.

Invariant: nothing published here carries images, plaintext video or secret
keys; the broker is treated as untrusted (everything that matters is signed).
"""

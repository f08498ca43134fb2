"""End-to-end encryption: the clip envelope and the household's keys and roster (PyNaCl only).

Imports only the ground floor (`agent.errors`, `agent.fsutil`): nothing here knows about cameras,
frames, MQTT or storage, so the format can be reviewed on its own.
"""

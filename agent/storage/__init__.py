"""Durable storage of sealed clips: the outbox (one shared SQLite queue core under the clip and
event outboxes) and the sinks (local or NAS directory, S3).

Only envelopes (ciphertext) are stored or uploaded, unless a sink is explicitly `plaintext: true`
for testing; a failed destination is retried, never replaced by raw output.
"""

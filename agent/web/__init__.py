"""The homeowner's page: a small HTTPS server on the hub for drawing zones on redacted frames.

Modules: auth (the password file, sessions, the login rate limit), tls (the self-signed
certificate), board (the latest released frame or withhold reason per camera), zonesave (the
page's zones validated and written like `check-config` and `--apply`, then applied live),
status (mode, counters, pending challenges, audit verdict), server (HTTP handling and security
headers), service (starting it from `run`), static/ (the page itself, served from a fixed
allow-list).

Invariant: the page sees only what leaves the hub. The board holds `RedactedFrame`s (checked with
`require_redacted`) and withhold reasons; no raw frame reaches this package. Nothing here can
approve access or change the household mode: those need an owner device's key, which the hub
never holds.
"""

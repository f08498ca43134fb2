"""The `privacy-agent` command line: `main` (the parser and exit codes) and one module per user:
homeowner, installer, owner, requester, tester."""

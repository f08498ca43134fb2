"""`python -m agent` runs the `privacy-agent` command line."""

from agent.cli import main

raise SystemExit(main())

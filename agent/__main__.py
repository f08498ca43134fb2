"""`python -m agent` runs the `privacy-agent` command line."""

from agent.cli.main import main

raise SystemExit(main())

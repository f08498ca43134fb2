"""`python -m firmware_hooks`."""

from firmware_hooks.hooks import main

raise SystemExit(main())

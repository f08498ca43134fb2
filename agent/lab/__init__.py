"""The tester's tools: fixtures with exact ground truth, replay, evaluation, detection quality,
and the checked access to `../shared` data.

Nothing in the product imports the lab; the lab may import everything below the CLI.
"""

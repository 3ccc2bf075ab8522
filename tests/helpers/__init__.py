"""Fixtures' building blocks, runners and readers shared by the test files (lightning-hydra-template's layout)."""

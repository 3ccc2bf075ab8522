"""The one error type for bad input: its message is the single line the user sees; and the CLIs' parser."""

import argparse


class UsageError(Exception):
    """A mistake in the user's config, data or files; the message names the problem and the fix."""


class OneLineParser(argparse.ArgumentParser):
    """The CLIs' parser: a wrong argument is one line, as every other mistake is, not a usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")

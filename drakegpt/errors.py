"""The one error type for bad input: its message is the single line the user sees."""


class UsageError(Exception):
    """A mistake in the user's config, data or files; the message names the problem and the fix."""

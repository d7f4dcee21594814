"""The one exception type a user sees: bad input, named with what was wrong and how to fix it."""


class SeqrepError(Exception):
    """Invalid input or an unusable environment. The CLI prints the message and exits with 2."""

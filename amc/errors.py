"""The one error type that amc raises for bad user input."""


class AmcError(Exception):
    """A problem with the user's input: the message names it and says how to fix it.

    The command line prints the message on one line and exits with status 2.
    """

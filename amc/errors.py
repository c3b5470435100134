"""The one error type that amc raises for bad user input."""


class AmcError(Exception):
    """A problem with the user's input: the message names it and says how to fix it.

    The command line prints the message on one line and exits with status 2.
    """


def library_text(exc: BaseException, limit: int = 160) -> str:
    """A library's exception as a short clause for an `AmcError`: its first line, cut at a word under `limit`
    characters (never mid-word), or the exception's type where it says nothing."""
    lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):  # a header such as "Error(s) in loading state_dict for Net:"
        lines[0] = f"{lines[0]} {lines[1]}"
    text = lines[0] if lines else type(exc).__name__
    if len(text) <= limit:
        return text.rstrip(".:;")
    return text[:limit].rsplit(" ", 1)[0].rstrip(".,:;") + " …"

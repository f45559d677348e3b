"""Errors a user can cause and fix; the CLI turns them into exit code 2 and one line."""


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it."""


def reason(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` of an exception, cut to ``limit`` characters:
    what a one-line error says about a library's exception (torch's run to a paragraph)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else "no message"
    if len(first) > limit:
        first = first[: limit - 1].rstrip() + "…"
    return f"{type(exc).__name__}: {first}"

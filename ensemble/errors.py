"""Errors a user can cause and fix; the CLI turns them into exit code 2 and one line."""


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it."""


class InputError(UserError, ValueError):
    """A ``UserError`` as the Python API raises it: also a ``ValueError``, which callers
    of scikit-learn- and statsforecast-shaped APIs catch. Not raised inside the library,
    whose ``except ValueError`` clauses around library calls must not catch user errors."""


def reason(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message`` of an exception, cut to ``limit`` characters:
    what a one-line error says about a library's exception (torch's run to a paragraph)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else "no message"
    if len(first) > limit:
        first = first[: limit - 1].rstrip() + "…"
    return f"{type(exc).__name__}: {first}"


def clip(text: str, limit: int) -> str:
    """``text`` on one line, cut at a word boundary to at most ``limit`` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1]  # a space right after the limit keeps the last word
    head = cut.rsplit(" ", 1)[0] if " " in cut else text[:limit]
    return head.rstrip(" ,;:") + " ..."

"""Errors a user can cause and fix; the CLI turns them into exit code 2 and one line."""


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it."""

"""Commands printed for the user to copy: ``ensemble.shell.join``, here for the
``experiments`` modules (``ensemble`` and ``timellm`` cannot import ``experiments``)."""

from __future__ import annotations

from ensemble.shell import join

__all__ = ["join"]

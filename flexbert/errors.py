"""The root of every error FlexBERT raises on purpose.

A ``FlexBertError`` means "the input cannot be used": its message is one line that names the key,
file (and line) or path, and what to do instead.  Every command (``flexbert/cli/``) turns one into
``error: <message>`` and exit code 2, never a traceback; anything else is a bug and keeps its
traceback behind ``--debug``.  Each package defines its own subclasses next to the code that raises
them (``ConfigError``, ``InputError``, ``RunFolderError``, ...); they all derive from this one.
"""

from __future__ import annotations


class FlexBertError(Exception):
    """An input FlexBERT refuses; ``str(error)`` is the one line shown to the user."""

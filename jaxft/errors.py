"""The one exception type for mistakes a user can make (bad path, unknown key, bad label, ...).

The CLI prints a `UserError` as a single message without a traceback and exits with status 2;
anything else is a bug in jaxft and keeps its traceback.
"""

import difflib


class UserError(Exception):
    """A problem in the user's input, with a message that names the culprit and the fix."""


def closest(name: str, candidates, n: int = 3) -> list[str]:
    """The candidates most similar to `name`, for 'did you mean' hints."""
    candidates = list(candidates)
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not found:
        # Fall back to a substring match on the last component, e.g. "lr" -> "optim.lr".
        tail = name.rsplit(".", 1)[-1].rsplit("/", 1)[-1]
        found = [c for c in candidates if tail and tail in c][:n]
    return found

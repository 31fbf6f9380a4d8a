"""User-facing errors: one exception type whose message names the file, field, value and fix."""

from __future__ import annotations


class KitError(Exception):
    """A problem with the user's input or environment, explained for a person.

    Notebooks and the command line show only the message of a KitError (no traceback): the
    message itself must say what is wrong, where (file, column, rows, key) and how to fix it.
    """


def show_kit_errors_without_traceback() -> None:
    """In IPython/Jupyter, print a KitError as its message alone instead of a traceback."""
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: nothing to hook
        return
    ip = get_ipython()
    if ip is None:
        return

    def _handler(shell, etype, evalue, tb, tb_offset=None):
        # The returned lines replace the traceback; the cell still counts as failed, so papermill
        # stops and reports `KitError: <message>`.
        return [f"KitError: {evalue}"]

    ip.set_custom_exc((KitError,), _handler)

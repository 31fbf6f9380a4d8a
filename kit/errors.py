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
        # IPython discards what a custom handler returns, so show the one-line "traceback"
        # ourselves: ipykernel then sends an error output (ename KitError, the message), the cell
        # counts as failed, and papermill stops with `KitError: <message>`.
        stb = [f"KitError: {evalue}"]
        shell._showtraceback(etype, evalue, stb)
        return stb

    ip.set_custom_exc((KitError,), _handler)

"""What Kaggle accepts as a competition slug, a submission message and a notebook reference.

The schema checks `competition.slug` and `submit.*` with these before any data is read; the
kaggle CLI client (kit/kaggle/cli.py) checks the same values with the same messages before it
builds a `kaggle competitions submit` command.
"""

from __future__ import annotations

import re

from kit.errors import KitError

__all__ = ["check_slug", "check_submission"]

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_slug(slug: str) -> None:
    """Refuse a competition slug that is not the last part of a competition URL."""
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise KitError(
            f"Competition slug {slug!r} is not valid. Fix: use the part of the competition URL "
            "after /competitions/, e.g. 'titanic' for https://www.kaggle.com/competitions/titanic."
        )


def check_submission(slug: str, message: str, kernel: str | None = None,
                     version: int | str | None = None) -> None:
    """Refuse what `kaggle competitions submit` would: a bad slug, message, kernel or version."""
    check_slug(slug)
    if not str(message).strip():
        raise KitError(
            f"Empty submission message for competition {slug!r}. Kaggle requires one (-m). "
            "Fix: pass a message that says which run and model this is, e.g. 'run-3 deberta fold0'."
        )
    if (kernel is None) != (version is None):
        raise KitError(
            f"Code-competition submission to {slug!r} needs both kernel and version "
            f"(got kernel={kernel!r}, version={version!r}). Fix: pass kernel='<owner>/<notebook>' "
            "and version=<N>, the version number `kaggle kernels push` printed."
        )
    if kernel is None:
        return
    if not re.fullmatch(r"[^/\s]+/[^/\s]+", kernel):
        raise KitError(
            f"Kernel {kernel!r} is not of the form <owner>/<notebook>. "
            "Fix: use the last two parts of the notebook URL, e.g. 'alice/my-deberta-run'."
        )
    if not str(version).isdigit() or int(version) < 1:
        raise KitError(
            f"Kernel version {version!r} is not a positive whole number. "
            "Fix: pass the version number `kaggle kernels push` printed, e.g. version=3."
        )


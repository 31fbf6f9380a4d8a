"""The Kaggle notebook image as data (Python, platform tag, packages, provenance) and its probe.

One file, `kaggle_image.txt`, describes the image `kit package` builds wheels for: `# key: value`
header lines (`python`, `platform`, `date`, `source`) and one `name==version` line per package
(a local label such as +cu128 is kept in the file and ignored when comparing). The shipped file
is derived from Kaggle's public sources (its header says which repositories, paths and commits);
`python -m kit kaggle-image --probe` replaces it with the truth: it pushes a tiny internet-on
notebook that writes `sys.version`, the newest manylinux tag of `packaging.tags` and
`pip list --format=freeze` to its output, waits for it, fetches that output and rewrites the file.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from kit.errors import KitError

log = logging.getLogger(__name__)

IMAGE_FILE = Path(__file__).with_name("kaggle_image.txt")
PROBE_OUTPUT = "kaggle_image_probe.json"  # what the probe notebook writes to /kaggle/working
PROBE_SLUG = "compkit-image-probe"
PROBE_CODE = f'''# compkit's image probe (kit/kaggle/image.py): Python, platform, packages.
import datetime, json, subprocess, sys
from packaging import tags

freeze = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze",
                         "--disable-pip-version-check"], capture_output=True, text=True,
                        check=True).stdout
# The newest manylinux tag (packaging 26 lists the bare linux_x86_64 first).
platform = next((t for t in tags.platform_tags() if t.startswith("manylinux_")),
                next(iter(tags.platform_tags())))
facts = {{"python": sys.version, "platform": platform,
          "freeze": freeze, "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}}
with open("{PROBE_OUTPUT}", "w") as f:  # a Kaggle notebook runs in /kaggle/working
    json.dump(facts, f, indent=1)
print(facts["python"], facts["platform"], len(freeze.splitlines()), "packages")
'''


@dataclass
class Image:
    """What the target image holds: its Python, platform tag, packages and where that is from."""

    python: str  # e.g. "3.12.13"
    platform: str  # the most specific platform tag, e.g. "manylinux_2_35_x86_64"
    packages: dict[str, str]  # canonical name -> version as listed (local label included)
    date: str = ""
    source: list[str] = field(default_factory=list)  # provenance lines

    @property
    def python_minor(self) -> str:
        return ".".join(self.python.split(".")[:2])

    def versions(self) -> dict[str, str]:
        """{canonical name: version without its local label}, for comparing with specifiers."""
        return {name: version.split("+", 1)[0] for name, version in self.packages.items()}


def parse_freeze(text: str, where: str = "the freeze") -> dict[str, str]:
    """`name==version` lines (comments, blanks and `-e`/`@ url` lines skipped) as a dict."""
    packages: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-") or " @ " in line:
            continue
        if "==" not in line:
            raise KitError(f"{where}:{number}: {line!r} is not `name==version`. Fix: refresh the "
                           "file with `python -m kit kaggle-image --probe`.")
        name, version = (part.strip() for part in line.split("==", 1))
        packages[canonicalize_name(name)] = version
    return packages


def read_image(path: str | Path = IMAGE_FILE) -> Image:
    """The image file at `path`; a plain `pip freeze` needs at least a `# python:` header."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"No image file {path}. Fix: pass the file `python -m kit kaggle-image "
                       "--probe` wrote, or leave the option out to use the shipped one.")
    text = path.read_text(encoding="utf-8")
    header: dict[str, list[str]] = {}
    key = ""
    for line in text.splitlines():
        if not line.startswith("#"):
            continue
        body = line[1:].strip()
        head, sep, value = body.partition(":")
        if sep and head.strip() in ("python", "platform", "date", "source"):
            key = head.strip()
            header.setdefault(key, []).append(value.strip())
        elif key == "source" and line.startswith("#   "):
            header["source"].append(line[4:].rstrip())
        else:
            key = ""
    packages = parse_freeze(text, str(path))
    # The old list's form: the Python as a `python==3.11.11` line.
    python = (header.get("python") or [packages.pop("python", "")])[0]
    packages.pop("python", None)
    if not python:
        raise KitError(f"{path} does not say which Python the image has. Fix: add a header line "
                       "`# python: 3.12.13` (the image's `sys.version`), or rewrite the file "
                       "with `python -m kit kaggle-image --probe`.")
    platform = (header.get("platform") or ["manylinux_2_35_x86_64"])[0]
    return Image(python.split()[0], platform, packages, (header.get("date") or [""])[0],
                 [s for s in header.get("source", []) if s])


def render(image: Image, intro: str = "") -> str:
    """The file's text: the header, then the packages sorted by name."""
    lines = [
        "# The Kaggle Python notebook image, as data: `kit package` resolves wheels for this",
        "# Python and platform and ships only what the list below lacks (kit/kaggle/image.py).",
        "# Replace it with the truth from a real Kaggle notebook:",
        "#     python -m kit kaggle-image --probe",
        *(f"# {line}" for line in intro.splitlines()),
        f"# python: {image.python}",
        f"# platform: {image.platform}",
        f"# date: {image.date}",
        "# source:",
        *(f"#   {line}" for line in image.source),
    ]
    lines += [f"{name}=={version}" for name, version in sorted(image.packages.items())]
    return "\n".join(lines) + "\n"


def image_from_probe(facts: Mapping[str, str], ref: str, version: int | None) -> Image:
    """The Image a probe notebook's output describes."""
    date = str(facts.get("date", ""))[:10] or dt.date.today().isoformat()
    return Image(str(facts["python"]).split()[0], str(facts["platform"]),
                 parse_freeze(str(facts["freeze"]), PROBE_OUTPUT), date,
                 [f"probed in Kaggle notebook {ref} version {version} on {date}: sys.version "
                  f"{str(facts['python']).split()[0]}, packaging.tags (newest manylinux), "
                  "pip list --format=freeze"])


def probe_notebook() -> dict:
    """The probe notebook (one code cell), as nbformat 4 JSON."""
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": "probe",
                       "metadata": {}, "outputs": [], "source": PROBE_CODE}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                        "name": "python3"},
                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


@dataclass
class ProbeResult:
    """The probe's folder, kernel, commands; the image file written (None for a dry run)."""

    folder: Path
    ref: str
    commands: list[str]
    written: Path | None = None
    image: Image | None = None


def probe(folder: str | Path, *, owner: str = "", target: str | Path = IMAGE_FILE,
          accelerator: str = "t4x2", dry_run: bool = True,
          env: Mapping[str, str] | None = None, poll_seconds: float = 15.0,
          limit_seconds: float = 1800.0, sleep: Callable[[float], None] = time.sleep,
          ) -> ProbeResult:
    """Write the probe notebook into `folder`, push it, wait, fetch, rewrite `target`."""
    from kit.kaggle import metadata
    from kit.kaggle.commands import run_kaggle
    from kit.kaggle.kernels import DONE, VERSION_LINE, fetch_output, follow, log_tail
    from kit.kaggle.metadata import PLACEHOLDER_OWNER

    env = os.environ if env is None else env
    owner = owner or env.get("KAGGLE_USERNAME", "").strip()
    if not owner:
        if not dry_run:
            raise KitError("Whose Kaggle account runs the probe? Fix: pass --owner <your Kaggle "
                           "username> (or set KAGGLE_USERNAME).")
        owner = PLACEHOLDER_OWNER
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probe.ipynb").write_text(json.dumps(probe_notebook(), indent=1) + "\n")
    metadata.write_metadata(folder, metadata.KERNEL_FILE, metadata.kernel_metadata(
        owner, PROBE_SLUG, "probe.ipynb", accelerator=accelerator, internet=True))
    metadata.validate(folder, "kernel")
    ref = f"{owner}/{PROBE_SLUG}"
    output = folder / "output"
    result = ProbeResult(folder, ref, [shlex.join(c) for c in (
        ["kaggle", "kernels", "push", "-p", str(folder)], ["kaggle", "kernels", "status", ref],
        ["kaggle", "kernels", "output", ref, "-p", str(output), "-o"])])
    if dry_run:
        return result
    page = f"https://www.kaggle.com/code/{ref}"
    pushed = run_kaggle(["kernels", "push", "-p", str(folder)], f"push of {ref}", page, env=env)
    found = VERSION_LINE.search(pushed.output)
    version = int(found.group(1)) if found else None
    status = follow(ref, page, env, poll_seconds, limit_seconds, sleep)
    fetch_output(ref, output, page, env)
    facts_file = output / PROBE_OUTPUT
    if status != DONE or not facts_file.is_file():
        raise KitError(f"The image probe {ref} (version {version}) ended {status} without "
                       f"{PROBE_OUTPUT}. The end of its log:\n{log_tail(output, ref)}\n"
                       f"Fix: open {page}, check the internet is on for it, run it again.")
    result.image = image_from_probe(json.loads(facts_file.read_text()), ref, version)
    Path(target).write_text(render(result.image), encoding="utf-8")
    result.written = Path(target)
    log.info("%s now describes %s: Python %s, %s, %d packages", target, ref,
             result.image.python, result.image.platform, len(result.image.packages))
    return result

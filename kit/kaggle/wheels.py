"""The wheels an internet-off Kaggle notebook needs: the kit's own, and every one its image lacks.

What the image already has, its Python and its platform tag come from the image file
(kit/kaggle/image.py: `kaggle_image.txt`, derived from Kaggle's public sources or probed in a real
notebook). Starting from the kit wheel's own requirements, each requirement the image does not
satisfy is downloaded with `pip download --no-deps --only-binary=:all:` for the image's Python
and platform (never this interpreter's), pinned to the version the run was made with (its
env.json, else the lock) when that version fits; then that wheel's own requirements are checked
the same way, until nothing is missing. Resolving one package at a time (rather than `pip
download` of the whole tree) is what keeps the image's torch and CUDA stack out of the folder:
they are never downloaded, and a requirement the image's torch does not meet is an error, never a
replacement. A package with no wheel for the target is an error naming it.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from kit.errors import KitError
from kit.kaggle import image as kaggle_image

log = logging.getLogger(__name__)

IMAGE_PACKAGES = kaggle_image.IMAGE_FILE
# The image's GPU stack: replacing any of these breaks CUDA, so they are never shipped.
NEVER_SHIP = frozenset({"torch", "torchvision", "torchaudio", "triton", "jax", "jaxlib",
                        "tensorflow"})


@dataclass(frozen=True)
class Target:
    """The Python and platform the wheels are for (the Kaggle image's)."""

    python_version: str = "3.12"
    # Ubuntu 22.04 has glibc 2.35: every manylinux tag up to it. Listed one by one because older
    # pips do not widen `--platform manylinux_2_35_x86_64` to the lower glibc versions.
    platforms: tuple[str, ...] = (
        *(f"manylinux_2_{minor}_x86_64" for minor in range(35, 4, -1)),
        "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64",
    )

    @classmethod
    def for_image(cls, image: kaggle_image.Image) -> Target:
        """The image's Python (major.minor) and every platform tag its own tag accepts."""
        return cls(image.python_minor, platform_tags(image.platform))

    def describe(self) -> str:
        return f"CPython {self.python_version} on {self.platforms[0]}"

    def pip_args(self) -> list[str]:
        args = ["--python-version", self.python_version, "--implementation", "cp"]
        for platform in self.platforms:
            args += ["--platform", platform]
        return args

    def marker_env(self, extra: str = "") -> dict[str, str]:
        env = dict(default_environment())
        env.update({"python_version": self.python_version,
                    "python_full_version": f"{self.python_version}.0",
                    "sys_platform": "linux", "platform_system": "Linux",
                    "os_name": "posix", "platform_machine": "x86_64",
                    "implementation_name": "cpython", "platform_python_implementation": "CPython",
                    "extra": extra})
        return env


@dataclass
class WheelPlan:
    """What was downloaded and why; what the image was trusted to provide."""

    downloaded: dict[str, Path] = field(default_factory=dict)  # canonical name -> wheel
    provided: dict[str, str] = field(default_factory=dict)  # canonical name -> image version
    reasons: dict[str, str] = field(default_factory=dict)  # canonical name -> requirement


def platform_tags(tag: str) -> tuple[str, ...]:
    """`manylinux_2_35_x86_64` and every older manylinux tag a glibc 2.35 machine installs."""
    glibc = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag)
    if not glibc:
        return (tag,)
    newest, arch = int(glibc.group(1)), glibc.group(2)
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return (*(f"manylinux_2_{minor}_{arch}" for minor in range(newest, 4, -1)),
            *(f"{name}_{arch}" for minor, name in legacy.items() if minor <= newest))


def read_image_packages(path: str | Path = IMAGE_PACKAGES) -> dict[str, str]:
    """The image file's (or a plain freeze's) packages as {canonical name: version}."""
    listed = kaggle_image.parse_freeze(Path(path).read_text(encoding="utf-8"), str(path))
    listed.pop("python", None)
    return {name: version.split("+", 1)[0] for name, version in listed.items()}


def run_versions(run_folder: Path | None, lock: Path | None = None) -> dict[str, str]:
    """The versions a run was made with: the lock's, overridden by the run's env.json."""
    versions: dict[str, str] = {}
    if lock is not None and lock.is_file():
        versions.update(read_image_packages(lock))
    env_file = run_folder / "env.json" if run_folder else None
    if env_file is not None and env_file.is_file():
        packages = json.loads(env_file.read_text()).get("packages") or {}
        versions.update({canonicalize_name(k): v for k, v in packages.items() if v})
    return versions


def wheel_requirements(wheel: Path, extras: set[str], target: Target) -> list[Requirement]:
    """The requirements of `wheel` that apply on `target` with `extras` requested."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(zf.read(meta).decode("utf-8"))
    out = []
    for line in message.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate(target.marker_env(e))
                                     for e in ({""} | extras)):
            out.append(req)
    return out


def _satisfies(version: str, spec: SpecifierSet) -> bool:
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return True  # a local build the specifier cannot read: trust the image


def build_kit_wheel(root: Path, dest: Path) -> Path:
    """`pip wheel . --no-deps` of the checkout at `root` into `dest`; the wheel's path.

    Built from a clean copy of the sources: setuptools writes build/ and *.egg-info where it
    builds, and a stale build/lib of an earlier build can leak old files into the wheel.
    """
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(root / "kit", src / "kit",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / name).is_file():
                shutil.copy2(root / name, src / name)
        _pip(["wheel", str(src), "--no-deps", "-w", str(dest), "-q"], "build the kit's wheel")
    new = sorted(set(dest.glob("*.whl")) - before) or sorted(dest.glob("compkit-*.whl"))
    if not new:
        raise KitError(f"`pip wheel {root}` wrote no wheel into {dest}.")
    return new[-1]


def _pip(args: list[str], what: str) -> str:
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise KitError(f"pip could not {what}:\n{tail}\nFix: check the package index is "
                       "reachable (PyPI) and that the requirement has a wheel for the target.")
    return done.stdout


Downloader = Callable[[list[str], Path, Target], None]


def pip_download(specs: list[str], dest: Path, target: Target) -> None:
    """`pip download` of `specs` for `target`; a KitError naming the spec that has no wheel."""
    args = ["download", "--no-deps", "--only-binary=:all:", *target.pip_args(), "-d", str(dest),
            "-q"]
    try:
        _pip([*args, *specs], "download " + ", ".join(specs))
        return
    except KitError as batch:
        if len(specs) == 1:
            raise _no_wheel(specs[0], target, str(batch)) from None
    for spec in specs:  # one at a time, to name the one that has no wheel
        try:
            _pip([*args, spec], f"download {spec}")
        except KitError as err:
            raise _no_wheel(spec, target, str(err)) from None


def _no_wheel(spec: str, target: Target, said: str) -> KitError:
    name = Requirement(spec).name
    last = [ln for ln in said.splitlines() if ln.strip()][1:-1][-1:] or [said[:200]]
    return KitError(
        f"No wheel of {spec} exists for the Kaggle image ({target.describe()}); pip said: "
        f"{last[0].strip()}\nFix: pin a version of {name} that publishes a wheel for Python "
        f"{target.python_version} (https://pypi.org/project/{name}/#files), or build the wheels "
        "inside the real image: `python -m kit package RUN --build-on-kaggle`.")


def _pinned(name: str, spec: SpecifierSet, versions: dict[str, str]) -> str:
    """`name==<the run's version>` when the run had one that fits `spec`, else `name<spec>`."""
    used = versions.get(name)
    if used and _satisfies(used.split("+", 1)[0], spec):
        return f"{name}=={used.split('+', 1)[0]}"
    if used:
        log.warning("The run used %s %s, which does not fit %s%s: downloading the newest that "
                    "does.", name, used, name, spec)
    return f"{name}{spec}"


def download_missing(
    requirements: list[Requirement], dest: Path, image: dict[str, str],
    target: Target = Target(), max_rounds: int = 30, *,
    versions: dict[str, str] | None = None, download: Downloader = pip_download,
) -> WheelPlan:
    """Download into `dest` every wheel `requirements` need that `image` does not provide.

    `versions` (the run's, see `run_versions`) pins each downloaded package where it fits;
    `download` is `pip_download` (tests pass a fake).
    """
    dest.mkdir(parents=True, exist_ok=True)
    versions = versions or {}
    plan = WheelPlan()
    extras: dict[str, set[str]] = {}
    pending = list(requirements)
    for _ in range(max_rounds):
        wanted: dict[str, SpecifierSet] = {}
        for req in pending:
            name = canonicalize_name(req.name)
            extras.setdefault(name, set()).update(req.extras)
            got = plan.downloaded.get(name)
            if got is not None and _satisfies(str(parse_wheel_filename(got.name)[1]),
                                              req.specifier):
                continue  # already shipped (it replaces the image's older one)
            have = image.get(name)
            if have is not None and _satisfies(have, req.specifier):
                plan.provided[name] = have
                continue
            if name in NEVER_SHIP:
                raise KitError(
                    f"{req} is needed but the Kaggle image has {name} {have}, which the kit "
                    f"never replaces (it is the image's GPU build). Fix: pin a version of the "
                    "package that asked for it that works with the image's, or refresh "
                    f"{IMAGE_PACKAGES.name} if the image changed (`python -m kit kaggle-image "
                    "--probe`).")
            wanted[name] = wanted.get(name, SpecifierSet()) & req.specifier
            plan.reasons.setdefault(name, str(req))
        if not wanted:
            return plan
        specs = [_pinned(name, spec, versions) for name, spec in sorted(wanted.items())]
        log.info("Downloading %d wheel(s) the image lacks for %s: %s", len(specs),
                 target.describe(), ", ".join(specs))
        before = {p.name for p in dest.glob("*.whl")}
        download(specs, dest, target)
        pending = []
        for wheel in sorted(dest.glob("*.whl")):
            name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
            if name not in wanted:
                continue
            if wheel.name not in before or name not in plan.downloaded:
                plan.downloaded[name] = wheel
                pending += wheel_requirements(wheel, extras.get(name, set()), target)
    raise KitError(f"The wheel closure did not settle after {max_rounds} rounds.")

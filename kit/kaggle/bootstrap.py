"""The notebooks' first cell: install the kit on Kaggle or Colab without touching their torch.

Standalone on purpose (nothing from `kit`): it runs before the kit is importable, as the first
cell of every notebook (`cell_source()` writes that cell; tests keep the two the same) and as
`kit_bootstrap.py` in the offline dataset. Where `import kit` already works it does nothing.
Internet off: `pip install --no-index --find-links <each attached .../wheels> compkit`. Internet
on and no wheels attached: `pip install <KIT_SOURCE>`. Either way the installed torch is pinned
with a constraint, so pip can never replace the platform's CUDA build.
"""

import glob
import importlib.util
import os
import subprocess
import sys
import tempfile

KIT_SOURCE = "git+https://github.com/YOUR-GITHUB-USER/compkit"  # used only with internet on


def install_kit(input_root="/kaggle/input", source=None):
    """Make `import kit` work here; returns what it did (a short sentence)."""
    if importlib.util.find_spec("kit") is not None:
        return "kit already importable: nothing installed"
    found = sorted(glob.glob(os.path.join(input_root, "**", "wheels", "compkit-*.whl"),
                             recursive=True))
    pins = []
    if importlib.util.find_spec("torch") is not None:
        from importlib.metadata import version

        pins.append("torch==" + version("torch"))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\n".join(pins) + "\n")
    pip = [sys.executable, "-m", "pip", "install", "-q", "-c", constraints.name]
    if found:
        # Every attached wheels/ folder: the dataset's, and a wheel builder's output
        # (`kit package --build-on-kaggle`) attached as a kernel source.
        folders = sorted({os.path.dirname(p) for p in glob.glob(
            os.path.join(input_root, "**", "wheels", "*.whl"), recursive=True)})
        links = [arg for folder in folders for arg in ("--find-links", folder)]
        cmd = [*pip, "--no-index", *links, "compkit"]
    else:
        cmd = [*pip, source or os.environ.get("KIT_SOURCE", KIT_SOURCE)]
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()
    return "installed: " + " ".join(cmd[4:])


def cell_source():
    """The notebooks' first cell: this module's code, then the call."""
    with open(__file__, encoding="utf-8") as f:
        code = f.read().split('"""', 2)[2].split("\n\ndef cell_source", 1)[0].strip()
    head = "# Bootstrap (kit/kaggle/bootstrap.py): installs the kit on Kaggle/Colab, else nothing."
    return head + "\n" + code + "\n\nprint(install_kit())\n"


if __name__ == "__main__":
    sys.stdout.write(install_kit(*sys.argv[1:2]) + "\n")

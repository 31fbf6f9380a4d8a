"""compkit: a reproducible, Kaggle-notebook-first kit for text-classification competitions."""

import warnings as _warnings

__version__ = "0.1.0"

# tqdm.autonotebook warns "IProgress not found" (TqdmWarning) once, when it is first imported in
# a Jupyter kernel without ipywidgets (papermill's kernels here), then falls back to the text
# bar, which is what a notebook log wants. The kit's readers, transformers and datasets all
# import tqdm.auto: importing it first, with that one warning filtered, keeps every log clean.
with _warnings.catch_warnings():
    _warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.autonotebook  # noqa: F401

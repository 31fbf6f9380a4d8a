"""compkit: a reproducible, Kaggle-notebook-first kit for text-classification competitions."""

__version__ = "0.1.0"

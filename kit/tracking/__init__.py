"""Experiment tracking: each run folder as an MLflow run (kit.tracking.mlflow_tracker)."""

from kit.tracking.mlflow_tracker import (
    RUN_FILE,
    Tracker,
    TrackingSummary,
    open_tracker,
    track_submission,
)

__all__ = ["RUN_FILE", "Tracker", "TrackingSummary", "open_tracker", "track_submission"]

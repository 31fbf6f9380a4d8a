"""Test helpers shared by several test modules (tiny models, synthetic data)."""

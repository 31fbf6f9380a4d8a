"""A loopback stand-in for the Kaggle API endpoints the real `kaggle` CLI uses in tests."""

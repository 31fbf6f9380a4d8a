"""Serving a finished run: batch prediction of files, a REST API and a small web page."""

"""Desired-state resources: one module per kind of Google Cloud object (see ``base.py``)."""

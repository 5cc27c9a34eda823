"""Prefect flows: the data path, one line per stage."""

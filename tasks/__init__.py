"""Prefect tasks: each wraps one component with retries, tags and timeouts (about ten lines)."""

"""Thin Prefect task adapters around library functions: names, retries, timeouts, caching.

No logic lives here: every task is a library function wrapped with task options. Results
are small dicts, never persisted (nothing large goes through Prefect's result storage), and
nothing is cached by Prefect: DVC decides what is up to date.
"""

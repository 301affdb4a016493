"""The data half of the loop: drops in, checked, versioned, split and decoded once.

- `demo`: the demo digits as drops;  `arrivals`: which drops are complete;
- `ingest/`: drops into the raw store, whole or not at all;  `versioning`: DVC;
- `validation`, `splits`, `prepare`: the validate, split and prepare stages.
"""

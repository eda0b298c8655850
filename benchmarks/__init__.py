"""Load benchmarks for `lb`: run with `python -m benchmarks` (or `lb bench`).

One run starts an origin, then each subject (the proxy under test, or none for `direct`) in turn,
drives every case at it with wrk, and writes `results.md`, `results.json` and a bar chart.
See `benchmarks/README.md`.
"""

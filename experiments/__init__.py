"""One-question studies, each run as ``python -m experiments.<name>`` (``experiments/README.md``
lists them with the question each answered and where its result is).

The studies use the benchmark harness (``benchmarks``: compare, features, metrics, report, ...);
the harness never imports them.
"""

"""Side-by-side benchmarks: raw httpx, official SDKs, LiteLLM, airframe, avionics.

    uv run --group bench python -m bench            # full run (~18 min on 2 vCPUs), or `make bench`
    uv run --group bench python -m bench --quick    # reduced run, under 2 minutes

Prints one table and writes it to ``bench/results/`` as JSON and as a PNG chart. Method and
latest results: docs/performance.md. Not part of `make test`: nothing here asserts a time.
"""

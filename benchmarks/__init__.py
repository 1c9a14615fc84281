"""Performance benchmarks: they write results as ratios measured in one run, never assert timings."""

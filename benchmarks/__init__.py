"""realip's benchmarks (``make bench``): ``run.py`` is the driver; docs/performance.md explains the method."""

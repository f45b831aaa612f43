"""topselect's benchmarks: measured comparisons whose results go to BENCHMARKS.md.

Run ``python -m benchmarks list`` to see the registered benchmarks and
``python -m benchmarks run NAME [--quick]`` to run one. The standalone scripts in this
directory still run as ``python benchmarks/<script>.py``.
"""

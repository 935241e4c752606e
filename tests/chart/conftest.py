"""The chart tests' fixtures and helpers live in the chart kit, tests/plugins/chart.py: a pytest
plugin that tests/conftest.py registers (``pytest_plugins``), so that tests/chart and
tests/reliability share one copy without importing each other's conftest.py by file path. It
renders the chart with the real jupyterhub and dask-gateway charts from ../shared/charts (or the
chart's charts/ after ``helm dependency update``), runs what they render, and falls back to a
smoke mode with stand-in subcharts where they are missing.
"""

"""Side-by-side benchmarks: this package against what users would do instead (issues 8, 15).

Every row runs both sides in the same run, against the same local S3 server (moto behind the
counting proxy, optional per-request latency), and reports medians of repeated measurements and
their ratios:

1. open a session (probes + units)            ``row1_open.py``
2. one LFP window / one channel, long span    ``row2_lfp.py``
3. whole-probe LFP spectrum                   ``row3_spectrum.py``
4. read throughput against the server's limit ``row4_throughput.py``
5. scaling with workers                       ``row5_scaling.py``
6. presentationwise spike counts              ``row6_spikes.py``
7. the machine limit: row 3 from memory       ``row7_limit.py``
8. the catalog at the release's size          ``row8_catalog.py``

Row 3 also runs under link profiles (``--profiles``: latency only, "compute next to S3" at
90 MB/s per connection, "laptop" at 25 MB/s in total: the proxy's link model).
``coalesce_sweep.py`` (run on its own) measured the range-coalescing constants of
``storage/ranges.py``.

What the other side does is in ``comparators.py`` (pynwb over fsspec defaults and over remfile,
h5py over fsspec defaults, the AllenSDK way; AllenSDK 2.16.2 itself, in its own environment, runs
``allensdk_side.py`` for row 6); how things are measured in ``measure.py``; the
run itself (data, server, clusters, the results file) in ``runner.py``.

    .venv/bin/python -m benchmarks --preset bench --latency 0.02,0.05   # from the checkout
"""

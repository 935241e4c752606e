"""What the reliability tests share besides fixtures: the bucket, fault settings, helpers.

A module of its own (not ``conftest``): test modules import it by a name that is unique on
``sys.path``, so neither pytest's handling of the two ``conftest.py`` files nor a Dask worker
unpickling a test's function ever finds the other one.
"""

from __future__ import annotations

import logging

import neuropixels_dask as npd
from neuropixels_dask import caching
from neuropixels_dask import zarrstore as zs

BUCKET = "npd-reliability"
PREFIX = "ecephys-cache"
NO_FAULTS = {"latency": 0.0, "error_rate": 0.0, "reset_rate": 0.0, "truncate_rate": 0.0,
             "outage": "", "outage_seconds": 0.0,
             "fault_methods": [], "deny_access_keys": [], "seed": 0}
RETRY_MESSAGE = "retrying an S3 request"
#: the Zarr layout of the store tests: small shards and spike chunks, so many objects to damage
SMALL = zs.Layout(lfp_chunk=1250, lfp_chunks_per_shard=16, spike_chunk=4096)
#: every unit, whatever its quality metrics: the store tests compare all of them
NO_FILTERS = {"amplitude_cutoff_maximum": None, "presence_ratio_minimum": None,
              "isi_violations_maximum": None, "filter_by_validity": False}


def fresh_cache(url: str, so: dict):
    """A cache whose files are opened anew (no handle from an earlier test is reused)."""
    caching.clear_all()
    return npd.open_cache(url, **so)


def retry_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "neuropixels_dask.storage" and r.getMessage().startswith(RETRY_MESSAGE)]


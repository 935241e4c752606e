"""``get_client`` and the whole API on a real multi-process LocalCluster: workers open the files
themselves, and the results equal a local computation."""

from __future__ import annotations

import os

import dask
import numpy as np

import neuropixels_dask as npd


def _open_hdf5_files() -> int:
    from neuropixels_dask.readers import nwb

    return len(nwb.files)


def test_api_on_multiprocess_local_cluster(s3_cache, local_client):
    url, so = s3_cache
    cache = npd.open_cache(url, **so)
    session = cache.get_session_data(int(cache.get_session_table().index[0]))
    assert npd.get_client() is local_client
    pid = int(session.probes.index[0])
    lfp = session.get_lfp(pid)
    mean = lfp.mean("time").compute()
    with dask.config.set(scheduler="sync"):
        expected = lfp.mean("time").compute()
    np.testing.assert_allclose(mean.values, expected.values, rtol=1e-6)
    pres = session.get_stimulus_table("flashes").index
    counts = session.presentationwise_spike_counts(np.linspace(0, 0.2, 11), pres,
                                                   session.units.index).compute()
    with dask.config.set(scheduler="sync"):
        ref = session.presentationwise_spike_counts(np.linspace(0, 0.2, 11), pres,
                                                    session.units.index).compute()
    np.testing.assert_array_equal(counts.values, ref.values)
    # the reads ran in the worker processes, which opened the files themselves
    opened = local_client.run(_open_hdf5_files)
    assert len(opened) == 2 and sum(opened.values()) >= 1
    pids = local_client.run(os.getpid)
    assert os.getpid() not in pids.values()

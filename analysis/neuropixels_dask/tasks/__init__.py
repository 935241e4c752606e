"""The task layer: every Dask graph the package builds, and one rule for where it runs.

- :mod:`.client`: which scheduler runs a graph (an explicit client, else a local scheduler set
  in Dask's config, else the current distributed client).
- :mod:`.lfp`: a probe's LFP as a lazy ``(time, channel)`` DataArray, one task per row of
  storage chunks (NWB) or per shard (Zarr).
- :mod:`.spikes`: spike counts and trains, one task per group of units.
- :mod:`.runner`: many independent calls (the conversion's blocks) with a progress bar.
- :mod:`.sessions`: ``map_sessions``, one analysis over many sessions, failures reported.

Tasks carry sources (URL + storage options + a slice), never an open file; the readers open
files inside the task.
"""

from .client import current_client
from .runner import run_tasks
from .sessions import SessionResults, map_sessions

__all__ = ["SessionResults", "current_client", "map_sessions", "run_tasks"]

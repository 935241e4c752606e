"""``neuropixels-dask hub local``: the Helm chart's hub (JupyterHub, dask-gateway, S3) on localhost.

- :mod:`.launcher`: merges the chart's values, renders its settings with ``helm template``,
  starts and stops every process (:class:`~.launcher.HubLocal`).
- :mod:`.serverconfig`: runs inside the JupyterHub and dask-gateway processes, applying the
  chart's ``extraConfig`` snippets to their real configuration.
"""

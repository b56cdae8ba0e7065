"""How ``msd-dagster load`` runs jobs: created as the UI creates them, executed in local processes.

* :mod:`.plan`: the folders to load are split into runs over contiguous ranges of partitions:
  Dagster's fixed cost per run is shared by several folders.
* :mod:`.launch`: a run is created in the Dagster instance with the origin of the code location
  that ``dagster dev`` loads from ``workspace.yaml`` and with the same job snapshot, so the UI
  treats it as one of its own ("Re-execute", "From failure"). A folder run is what the asset
  graph launches for ``load_folders``' assets: a run of the implicit asset job with the same
  asset and check selection, so it has the same snapshot and steps. Each run executes in a
  forked process (the parent has imported everything already), which dies with its parent and
  gives its memory back when the run ends. Dagster's internals stay in
  :mod:`msd_dagster.dagster_compat`.
* :mod:`.tags`: the tags a run is created with, and what they say about it later.
* :mod:`.progress`: the parent follows every running run through the instance's event log: a
  folder is reported as soon as its twelve tables are loaded.
* :mod:`.cleanup`: runs left unfinished by a killed process or a killed load are recorded as
  failed, as Dagster's run monitoring would.
* :mod:`.runner`: :class:`~.runner.LocalRunner` puts these together, ``workers`` runs at a time,
  and stops them on Ctrl-C or SIGTERM.
"""

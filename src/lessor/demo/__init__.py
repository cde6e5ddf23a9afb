"""``lessor demo``: sweepers in three simulated datacenters share a store through etcd.

:mod:`~lessor.demo.run` orchestrates (``python -m lessor demo``), :mod:`~lessor.demo.worker`
is one sweeper process (``python -m lessor.demo.worker``, also the deploy/ worker container's
command) and :mod:`~lessor.demo.processes` how the demo starts and stops those processes,
:mod:`~lessor.demo.store` the SQLite reminder store they share, :mod:`~lessor.demo.verdict`
the checks run on its logs, :mod:`~lessor.demo.display` and :mod:`~lessor.demo.table` what is
shown.
"""

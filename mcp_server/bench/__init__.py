"""Benchmarks shipped with the package.

``raft-manager bench`` (:mod:`.compare`, rendered by :mod:`.report`) runs ours, etcd
(:mod:`.etcd_system`) and PySyncObj (:mod:`.pysyncobj_system`) side by side, each a
3-node cluster on loopback; :mod:`.ours` and :mod:`.embedded` are our side,
:mod:`.failover` the kill -9 probe they share, :mod:`.loadgen` the lean load generator.
:mod:`.profile_leader` samples our leader under load with py-spy; :mod:`.http_baseline`
measures the HTTP layer alone; :mod:`.harness` is ``bench --existing`` (guarded load on
a configured cluster).
"""

"""Benchmarks shipped with the package: the load generator, the node benchmark
(``python -m mcp_server.bench.node_bench``), the HTTP baseline, and the
``raft-manager bench`` harness."""

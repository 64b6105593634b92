"""The adapters: one implementation of ``core.port.ClusterAdapter`` per cluster kind."""

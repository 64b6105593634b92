"""The clients of the members' APIs, below both the adapters and the local launchers:
one HTTP exchange with its failures mapped once (``http``), etcd's v3 JSON gateway
(``etcd_gateway``) and the TLS contexts they use (``tls``). The local etcd launcher
probes its members with the gateway client, so it lives here rather than in
``adapters``, which sit above ``local`` (docs/design.md, "Layout")."""

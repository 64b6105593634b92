"""The one TLS helper of the adapters: clusters.yaml's ``tls`` as what httpx verifies with.

httpx ignores ``cert=`` when ``verify`` is a CA path, so the client certificate would
silently not be sent; an ``ssl.SSLContext`` carries the CA and the client certificate
together. Every adapter builds its client with ``ssl_context``.
"""

from __future__ import annotations

import ssl
from typing import Any


def ssl_context(tls: Any) -> ssl.SSLContext | bool:
    """``verify=`` for httpx: True (system CAs), False (no verification), or a context
    with the configured CA and client certificate (``tls`` is a ``TLSConfig``)."""
    if tls is None or tls is True:
        return True
    if not tls.verify and not tls.cert_file:
        return False
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx

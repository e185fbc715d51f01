"""Egress by allow-list for the local pool's sessions (``serve --egress HOST[,HOST...]``).

Sessions have no network of their own. With ``--egress``, each sandbox gets a
Unix socket to :class:`EgressProxy`, which connects by name to allowed hosts
only (:class:`EgressPolicy`); the session's runner relays ``127.0.0.1:3128`` to
that socket and sets ``HTTPS_PROXY``. Off by default, as on Azure.
"""

from .policy import EgressPolicy, host_addresses
from .proxy import EgressProxy

__all__ = ["EgressPolicy", "EgressProxy", "host_addresses"]

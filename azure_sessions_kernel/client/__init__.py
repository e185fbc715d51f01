"""Sync and async clients for the dynamic-sessions data-plane API.

:class:`SessionsClient` and :class:`AsyncSessionsClient` speak every
api-version in :data:`API_VERSIONS` to an Azure Container Apps session pool
or to the local pool, and return the typed models of
:mod:`azure_sessions_kernel.wire` (re-exported here). Errors form the tree
documented in ``_exceptions.py``; timeouts and retries are configured with
:class:`Timeouts` and :class:`RetryPolicy`. :func:`acquire_local_pool` finds
or starts the local pool (``_local.py``). Logging goes to the
``azure_sessions_kernel.client`` logger (method, route, status, duration;
never tokens, identifiers or bodies).
"""

from ..wire import (
    API_VERSIONS,
    DATA_DIR,
    DEFAULT_API_VERSION,
    MAX_EXECUTION_TIMEOUT,
    MAX_UPLOAD_BYTES,
    ErrorInfo,
    Execution,
    ExecutionStatus,
    ImageResult,
    CommMessage,
    JupyterCell,
    PoolMetadata,
    RemoteFile,
    Session,
)
from ._async import AsyncSessionsClient
from ._config import RetryPolicy, Timeouts
from ._exceptions import (
    ApiError,
    AuthenticationError,
    AuthorizationError,
    BadRequestError,
    ConfigurationError,
    ConnectError,
    ExecutionTimeoutError,
    ExtensionUnavailableError,
    NotFoundError,
    PoolFullError,
    RequestTimeout,
    ResponseFormatError,
    ServerError,
    SessionNotFoundError,
    SessionsError,
    TransportError,
    UnsupportedOperationError,
    UploadTooLargeError,
)
from ._local import LocalPoolLease, acquire_local_pool, acquire_local_pool_sync
from ._streams import StreamEvent
from ._sync import SessionsClient

__all__ = [
    "acquire_local_pool",
    "acquire_local_pool_sync",
    "API_VERSIONS",
    "ApiError",
    "AsyncSessionsClient",
    "AuthenticationError",
    "AuthorizationError",
    "BadRequestError",
    "CommMessage",
    "ConfigurationError",
    "ConnectError",
    "DATA_DIR",
    "DEFAULT_API_VERSION",
    "ErrorInfo",
    "Execution",
    "ExecutionStatus",
    "ExecutionTimeoutError",
    "ExtensionUnavailableError",
    "ImageResult",
    "JupyterCell",
    "LocalPoolLease",
    "MAX_EXECUTION_TIMEOUT",
    "MAX_UPLOAD_BYTES",
    "NotFoundError",
    "PoolFullError",
    "PoolMetadata",
    "RemoteFile",
    "RequestTimeout",
    "ResponseFormatError",
    "RetryPolicy",
    "ServerError",
    "Session",
    "SessionNotFoundError",
    "SessionsClient",
    "SessionsError",
    "StreamEvent",
    "Timeouts",
    "TransportError",
    "UnsupportedOperationError",
    "UploadTooLargeError",
]

# Public names report this package, not the private module that defines them.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith(__name__ + "."):
        _obj.__module__ = __name__
del _name, _obj

"""Multi-host VXLAN overlay networking, the way Docker 1.9 introduced it.

``overlay.Controller`` is one host's handle on the cluster: create and inspect global networks,
connect containers (network namespaces) to them, resolve their names. ``overlay.Store`` opens
the cluster store that hosts share (``etcd://``, ``zk://``, ``consul://`` or the embedded
``file://`` store). Every error is an ``overlay.OverlayError``;
each subclass also derives from the built-in exception a caller would naturally catch
(``NotFoundError`` is a ``LookupError``, ``UnavailableError`` a ``ConnectionError``, ...).
An argument of the wrong type is a ``TypeError``, as for any Python call; one of the right type
with a bad value (a subnet such as ``"10.999.0.0/24"``, a VNI out of range) is an
``InvalidArgumentError``, a ``ValueError``, whose message names the parameter and the value.

Blocking calls release the GIL and answer Ctrl-C; objects may be shared between threads.
The native part lives in ``overlay._overlay``.
"""

from ._overlay import (
    AlreadyExistsError,
    ConflictError,
    Controller,
    Events,
    InternalError,
    InvalidArgumentError,
    KernelError,
    NotFoundError,
    OverlayError,
    PermissionDeniedError,
    Store,
    TimeoutError,
    UnavailableError,
    UnsupportedError,
    Watch,
    WatchEvent,
    __version__,
)

__all__ = [
    "AlreadyExistsError",
    "ConflictError",
    "Controller",
    "Events",
    "InternalError",
    "InvalidArgumentError",
    "KernelError",
    "NotFoundError",
    "OverlayError",
    "PermissionDeniedError",
    "Store",
    "TimeoutError",
    "UnavailableError",
    "UnsupportedError",
    "Watch",
    "WatchEvent",
    "__version__",
]

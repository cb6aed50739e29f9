"""Type stubs of the native module ``overlay._overlay`` (checked by mypy's stubtest)."""

import builtins
import os
from types import TracebackType
from typing import Any, Iterator, Literal, Mapping, Optional, Sequence, Tuple, Union

from typing_extensions import final

__all__ = [
    "__version__",
    "OverlayError",
    "NotFoundError",
    "AlreadyExistsError",
    "ConflictError",
    "InvalidArgumentError",
    "UnavailableError",
    "TimeoutError",
    "PermissionDeniedError",
    "UnsupportedError",
    "KernelError",
    "InternalError",
    "Controller",
    "Events",
    "Store",
    "Watch",
    "WatchEvent",
]

__version__: str

_Bytes = Union[bytes, bytearray]
_Path = Union[str, os.PathLike[str]]
_TxnOp = Union[
    Tuple[str, str],
    Tuple[str, str, _Bytes],
    Tuple[str, str, int],
    Tuple[str, str, None],
    Tuple[str, str, _Bytes, int],
]

class OverlayError(Exception):
    """Base class of every error raised by overlay."""

    kind: str
    op: str
    context: str
    hint: str
    errno: Optional[int]

class NotFoundError(OverlayError, LookupError): ...
class AlreadyExistsError(OverlayError): ...
class ConflictError(OverlayError): ...
class InvalidArgumentError(OverlayError, ValueError): ...
class UnavailableError(OverlayError, ConnectionError): ...
class TimeoutError(OverlayError, builtins.TimeoutError): ...
class PermissionDeniedError(OverlayError, PermissionError): ...
class UnsupportedError(OverlayError): ...
class KernelError(OverlayError, OSError): ...
class InternalError(OverlayError): ...

@final
class WatchEvent:
    """A change seen by a watch: kind "put", "delete" or "resync"."""

    @property
    def kind(self) -> str: ...
    @property
    def key(self) -> Optional[str]: ...
    @property
    def value(self) -> Optional[bytes]: ...
    @property
    def version(self) -> Optional[int]: ...
    @property
    def reason(self) -> Optional[str]: ...

@final
class Watch:
    """The changes below a prefix, as an iterator."""

    def next(self, timeout: Optional[float] = None) -> Optional[WatchEvent]: ...
    def __iter__(self) -> Iterator[WatchEvent]: ...
    def __next__(self) -> WatchEvent: ...
    def close(self) -> None: ...
    def __enter__(self) -> Watch: ...
    def __exit__(
        self,
        _exc_type: Optional[type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> Literal[False]: ...

@final
class Store:
    """A connection to a cluster store."""

    def __new__(cls, url: str) -> Store: ...
    def get(self, key: str) -> Optional[tuple[bytes, int]]: ...
    def put(self, key: str, value: _Bytes) -> int: ...
    def create(self, key: str, value: _Bytes) -> int: ...
    def cas(self, key: str, value: _Bytes, version: int) -> int: ...
    def delete(self, key: str) -> bool: ...
    def cas_delete(self, key: str, version: int) -> None: ...
    def list(self, prefix: str = "") -> builtins.list[tuple[str, bytes, int]]: ...
    def list_with_revision(
        self, prefix: str = ""
    ) -> tuple[builtins.list[tuple[str, bytes, int]], int]: ...
    def txn(self, ops: Sequence[_TxnOp]) -> builtins.list[Optional[int]]: ...
    def put_ephemeral(self, key: str, value: _Bytes) -> int: ...
    def watch(self, prefix: str = "", from_version: Optional[int] = None) -> Watch: ...
    @property
    def backend(self) -> str: ...
    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(
        self,
        _exc_type: Optional[type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> Literal[False]: ...

@final
class Events:
    """The controller's events as an iterator of dicts with a "type" key."""

    def next(self, timeout: Optional[float] = None) -> Optional[dict[str, Any]]: ...
    def __iter__(self) -> Iterator[dict[str, Any]]: ...
    def __next__(self) -> dict[str, Any]: ...

@final
class Controller:
    """One host's view of the overlay: networks, containers and names."""

    def __new__(
        cls,
        store: str = ...,
        advertise: str = ...,
        *,
        host_id: Optional[str] = None,
        host_netns: Optional[_Path] = None,
        mtu: Optional[int] = None,
        vxlan_port: int = 4789,
        default_pools: Optional[Sequence[Union[Tuple[str, int], Mapping[str, Union[str, int]]]]] = None,
        sticky_grace: Optional[float] = None,
        host_ttl: Optional[float] = None,
        reclaim_grace: Optional[float] = None,
        gateway_pool: Optional[str] = None,
        gateway_bridge: Optional[str] = None,
        dns: bool = True,
        dns_upstreams: Optional[Sequence[str]] = None,
        state_dir: Optional[_Path] = None,
    ) -> Controller: ...
    @property
    def host_id(self) -> str: ...
    def create_network(
        self,
        name: str,
        *,
        subnet: Optional[str] = None,
        gateway: Optional[str] = None,
        ip_range: Optional[str] = None,
        ipv6: bool = False,
        vni: Optional[int] = None,
        labels: Optional[Mapping[str, str]] = None,
        internal: bool = False,
        subnet6: Optional[str] = None,
        gateway6: Optional[str] = None,
        mtu: Optional[int] = None,
        aux_addresses: Optional[Mapping[str, str]] = None,
    ) -> dict[str, Any]: ...
    def networks(self) -> builtins.list[dict[str, Any]]: ...
    def inspect(self, name_or_id: str) -> dict[str, Any]: ...
    def remove_network(self, name_or_id: str) -> None: ...
    def connect(
        self,
        network: str,
        *,
        netns: Union[_Path, int],
        container_id: str,
        name: str,
        aliases: Sequence[str] = ...,
        ip: Optional[str] = None,
        ip6: Optional[str] = None,
        sticky: bool = False,
        hosts_file: Optional[_Path] = None,
        resolv_conf: Optional[_Path] = None,
        ifname: Optional[str] = None,
        publish: Sequence[str] = ...,
        owner: Optional[str] = None,
    ) -> dict[str, Any]: ...
    def disconnect(self, network: str, container_id: str) -> None: ...
    def resolve(self, name: str) -> builtins.list[str]: ...
    def health(self) -> dict[str, Any]: ...
    def events(self) -> Events: ...
    def close(self) -> None: ...
    def __enter__(self) -> Controller: ...
    def __exit__(
        self,
        _exc_type: Optional[type[BaseException]] = None,
        _exc: Optional[BaseException] = None,
        _tb: Optional[TracebackType] = None,
    ) -> Literal[False]: ...

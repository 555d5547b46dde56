from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Program(_message.Message):
    __slots__ = ("name", "region", "kind", "state", "pid", "restarts", "started_at", "ready_after", "endpoint", "message", "runtimes", "last_exit", "has_last_exit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    READY_AFTER_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    HAS_LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    region: str
    kind: str
    state: str
    pid: int
    restarts: int
    started_at: float
    ready_after: float
    endpoint: str
    message: str
    runtimes: _containers.RepeatedCompositeFieldContainer[Runtime]
    last_exit: int
    has_last_exit: bool
    def __init__(self, name: _Optional[str] = ..., region: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., pid: _Optional[int] = ..., restarts: _Optional[int] = ..., started_at: _Optional[float] = ..., ready_after: _Optional[float] = ..., endpoint: _Optional[str] = ..., message: _Optional[str] = ..., runtimes: _Optional[_Iterable[_Union[Runtime, _Mapping]]] = ..., last_exit: _Optional[int] = ..., has_last_exit: _Optional[bool] = ...) -> None: ...

class Runtime(_message.Message):
    __slots__ = ("name", "state")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("region", "version", "address", "supervisor_pid", "shutting_down", "programs", "chaos")
    class ChaosEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SUPERVISOR_PID_FIELD_NUMBER: _ClassVar[int]
    SHUTTING_DOWN_FIELD_NUMBER: _ClassVar[int]
    PROGRAMS_FIELD_NUMBER: _ClassVar[int]
    CHAOS_FIELD_NUMBER: _ClassVar[int]
    region: str
    version: str
    address: str
    supervisor_pid: int
    shutting_down: bool
    programs: _containers.RepeatedCompositeFieldContainer[Program]
    chaos: _containers.ScalarMap[str, str]
    def __init__(self, region: _Optional[str] = ..., version: _Optional[str] = ..., address: _Optional[str] = ..., supervisor_pid: _Optional[int] = ..., shutting_down: _Optional[bool] = ..., programs: _Optional[_Iterable[_Union[Program, _Mapping]]] = ..., chaos: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ProgramsRequest(_message.Message):
    __slots__ = ("glob", "dependents")
    GLOB_FIELD_NUMBER: _ClassVar[int]
    DEPENDENTS_FIELD_NUMBER: _ClassVar[int]
    glob: str
    dependents: bool
    def __init__(self, glob: _Optional[str] = ..., dependents: _Optional[bool] = ...) -> None: ...

class SignalRequest(_message.Message):
    __slots__ = ("glob", "signal")
    GLOB_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    glob: str
    signal: str
    def __init__(self, glob: _Optional[str] = ..., signal: _Optional[str] = ...) -> None: ...

class ActionReply(_message.Message):
    __slots__ = ("matched", "changed", "dependents", "programs", "signal", "pids")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    DEPENDENTS_FIELD_NUMBER: _ClassVar[int]
    PROGRAMS_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    matched: _containers.RepeatedScalarFieldContainer[str]
    changed: _containers.RepeatedScalarFieldContainer[str]
    dependents: _containers.RepeatedScalarFieldContainer[str]
    programs: _containers.RepeatedCompositeFieldContainer[Program]
    signal: str
    pids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, matched: _Optional[_Iterable[str]] = ..., changed: _Optional[_Iterable[str]] = ..., dependents: _Optional[_Iterable[str]] = ..., programs: _Optional[_Iterable[_Union[Program, _Mapping]]] = ..., signal: _Optional[str] = ..., pids: _Optional[_Iterable[int]] = ...) -> None: ...

class FollowRequest(_message.Message):
    __slots__ = ("glob", "lines", "follow", "since", "level", "grep")
    GLOB_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    GREP_FIELD_NUMBER: _ClassVar[int]
    glob: str
    lines: int
    follow: bool
    since: float
    level: str
    grep: str
    def __init__(self, glob: _Optional[str] = ..., lines: _Optional[int] = ..., follow: _Optional[bool] = ..., since: _Optional[float] = ..., level: _Optional[str] = ..., grep: _Optional[str] = ...) -> None: ...

class LogLine(_message.Message):
    __slots__ = ("log", "region", "time", "level", "text", "raw", "own_time")
    LOG_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    OWN_TIME_FIELD_NUMBER: _ClassVar[int]
    log: str
    region: str
    time: float
    level: str
    text: str
    raw: str
    own_time: bool
    def __init__(self, log: _Optional[str] = ..., region: _Optional[str] = ..., time: _Optional[float] = ..., level: _Optional[str] = ..., text: _Optional[str] = ..., raw: _Optional[str] = ..., own_time: _Optional[bool] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("fault",)
    FAULT_FIELD_NUMBER: _ClassVar[int]
    fault: _struct_pb2.Struct
    def __init__(self, fault: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Fault(_message.Message):
    __slots__ = ("id", "kind", "description", "targets", "started", "expires", "healed", "note")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    HEALED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    description: str
    targets: _containers.RepeatedScalarFieldContainer[str]
    started: float
    expires: float
    healed: float
    note: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., description: _Optional[str] = ..., targets: _Optional[_Iterable[str]] = ..., started: _Optional[float] = ..., expires: _Optional[float] = ..., healed: _Optional[float] = ..., note: _Optional[str] = ...) -> None: ...

class HealRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class HealReply(_message.Message):
    __slots__ = ("healed", "in_force")
    HEALED_FIELD_NUMBER: _ClassVar[int]
    IN_FORCE_FIELD_NUMBER: _ClassVar[int]
    healed: _containers.RepeatedCompositeFieldContainer[Fault]
    in_force: _containers.RepeatedCompositeFieldContainer[Fault]
    def __init__(self, healed: _Optional[_Iterable[_Union[Fault, _Mapping]]] = ..., in_force: _Optional[_Iterable[_Union[Fault, _Mapping]]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListReply(_message.Message):
    __slots__ = ("in_force", "host")
    class HostEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IN_FORCE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    in_force: _containers.RepeatedCompositeFieldContainer[Fault]
    host: _containers.ScalarMap[str, str]
    def __init__(self, in_force: _Optional[_Iterable[_Union[Fault, _Mapping]]] = ..., host: _Optional[_Mapping[str, str]] = ...) -> None: ...

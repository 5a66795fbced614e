"""Write Conveyor CI drivers in Python, as WebAssembly components for conveyor-host.

The Python form of the Rust SDK (crate ``conveyor-driver``): a driver is a class with a
``name``, the ``resources`` it listens to and a ``reconcile`` method, plus one line that exports
it as the component's ``WitWorld``::

    import conveyor_driver as cd

    class SampleDriver(cd.Driver):
        name = "sample-driver"
        resources = ["resource-1"]

        def reconcile(self, payload, event, run_id, logger):
            logger.log({"step": "1"}, "working")
            return cd.DriverResult.success("Sample Driver Reconciled Successfully")

    WitWorld = cd.export(SampleDriver)

Build it with componentize-py against the host's ``wit/`` directory, with this file's directory
on the Python path (see examples/python-driver/build.sh)::

    componentize-py -d wit -w driver componentize app -p . -p guest-sdk/python -o driver.wasm

Each event runs in a fresh instance: module-level state does not survive from one event to the
next. The generated ``wit_world`` bindings exist only inside the component; outside it the pure
parts (``Resource``, ``DriverResult``) still import and work, for unit tests.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Type, Union

__all__ = [
    "ClientError",
    "Created",
    "Driver",
    "DriverResult",
    "Logger",
    "Resource",
    "client",
    "export",
]

Labels = Union[Mapping[str, Any], Iterable[Tuple[str, Any]], None]


try:
    # The bindings exist only inside the component, where componentize-py generates them. They
    # are imported here, at build time, because the component's snapshot holds only the modules
    # loaded while the app was being initialised.
    from componentize_py_types import Err as _Err
    from wit_world.imports import client as _wit_client
    from wit_world.imports import log as _wit_log
    from wit_world.imports import types as _wit_types
except ImportError:  # outside a component: the pure parts stay usable (and testable)
    _Err = _wit_client = _wit_log = _wit_types = None  # type: ignore[assignment]


def _wit():
    if _wit_types is None:
        raise RuntimeError("the conveyor:driver bindings exist only inside a component")
    return _wit_types, _wit_log, _wit_client


class Logger:
    """The run's log, and the context of the event being handled."""

    def __init__(self, run_id: str, message_id: str, pipeline: Optional[str], attempt: int):
        self.run_id = run_id
        """The run id, also passed to ``reconcile``."""
        self.message_id = message_id
        """The id of the message that carried the event; the same on every redelivery."""
        self.pipeline = pipeline
        """The pipeline this run belongs to, if any."""
        self.attempt = attempt
        """Which delivery this is: 1 for the first, 2 for the first retry, and so on."""

    def log(self, labels: Labels, message: str) -> None:
        """Records one log line with labels, like the Go runtime's ``logger.Log(labels, msg)``.

        ``labels`` is a dict or an iterable of key/value pairs; values are turned into text.
        """
        _, wit_log, _ = _wit()
        wit_log.log(_labels(labels), str(message))

    def info(self, message: str) -> None:
        """Records one log line without labels."""
        self.log(None, message)


def _labels(labels: Labels) -> List[Tuple[str, str]]:
    if labels is None:
        return []
    items = labels.items() if isinstance(labels, Mapping) else labels
    return [(str(k), str(v)) for k, v in items]


class DriverResult:
    """What ``reconcile`` returns: Conveyor's ``DriverResult`` (success, message, data) plus an
    optional request to be retried. Make one with ``success``, ``failure`` or ``retry``."""

    def __init__(
        self,
        ok: bool,
        message: str,
        data: Any = None,
        transient: bool = False,
        after_ms: Optional[int] = None,
    ):
        self.ok = ok
        """Whether the work succeeded."""
        self.message = str(message)
        """A human-readable summary."""
        self.data = data
        """Structured output (anything ``json.dumps`` accepts), stored and published as
        the result's ``data``."""
        self.transient = transient
        """For a failure: deliver the event again later."""
        self.after_ms = after_ms
        """The least delay before the next attempt; None leaves it to the host's backoff."""

    @classmethod
    def success(cls, message: str, data: Any = None) -> "DriverResult":
        """A successful result with a message and optional data."""
        return cls(True, message, data)

    @classmethod
    def failure(cls, message: str, data: Any = None) -> "DriverResult":
        """A permanent failure: the event is not delivered again."""
        return cls(False, message, data)

    @classmethod
    def retry(cls, message: str, after_ms: Optional[int] = None, data: Any = None) -> "DriverResult":
        """A transient failure: the host delivers the event again (after at least ``after_ms``
        milliseconds if given, else with exponential backoff) until its attempt limit."""
        return cls(False, message, data, transient=True, after_ms=after_ms)

    def with_data(self, data: Any) -> "DriverResult":
        """Attaches structured output and returns the result."""
        self.data = data
        return self

    def __repr__(self) -> str:
        kind = "success" if self.ok else ("retry" if self.transient else "failure")
        return f"DriverResult.{kind}({self.message!r}, data={self.data!r})"

    def _into_wit(self):
        wit_types, _, _ = _wit()
        if self.ok:
            outcome = wit_types.Outcome_Success()
        elif self.transient:
            outcome = wit_types.Outcome_Retry(_delay(self.after_ms))
        else:
            outcome = wit_types.Outcome_Failure()
        data = None
        if self.data is not None:
            try:
                # NaN and Infinity are not JSON: refuse them here rather than hand the host
                # text it must reject.
                data = json.dumps(self.data, allow_nan=False)
            except (TypeError, ValueError) as e:
                data = json.dumps({"error": f"data did not serialise: {e}"})
        return wit_types.DriverResult(outcome=outcome, message=self.message, data=data)


def _delay(after_ms: Any) -> Optional[int]:
    """A retry delay as the WIT's u64 milliseconds; anything unusable leaves it to the host."""
    if after_ms is None:
        return None
    try:
        return min(max(0, int(after_ms)), 2**64 - 1)
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass
class Resource:
    """A Conveyor resource, as carried in an event's payload."""

    name: str
    resource: str
    """The resource's type: the name of its resource definition."""
    spec: Any = field(default_factory=dict)
    id: str = ""
    pipeline: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)
    """String-to-string metadata: ``version`` and ``driverresults.<driver>`` entries."""

    @staticmethod
    def parse(payload: str) -> "Resource":
        """Parses an event payload (or any resource JSON text). Raises ``ValueError`` if it is
        not a resource."""
        value = json.loads(payload)
        if not isinstance(value, dict):
            raise ValueError("a resource is a JSON object")
        try:
            return Resource(
                name=value["name"],
                resource=value["resource"],
                spec=value.get("spec", {}),
                id=value.get("id", ""),
                pipeline=value.get("pipeline") or None,
                metadata=dict(value.get("metadata") or {}),
            )
        except KeyError as e:
            raise ValueError(f"a resource needs {e.args[0]!r}") from None

    @property
    def version(self) -> Optional[str]:
        """The resource's version, from ``metadata["version"]``."""
        return self.metadata.get("version")

    def driver_result(self, driver: str) -> Optional[dict]:
        """The result an earlier pipeline step's driver left in its metadata, if any."""
        text = self.metadata.get(f"driverresults.{driver}")
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None

    def to_json(self) -> str:
        value: Dict[str, Any] = {"name": self.name, "resource": self.resource, "spec": self.spec}
        if self.id:
            value["id"] = self.id
        if self.pipeline:
            value["pipeline"] = self.pipeline
        if self.metadata:
            value["metadata"] = self.metadata
        return json.dumps(value)


class ClientError(Exception):
    """Why an API client call failed. ``kind`` is one of ``not-found``, ``invalid``,
    ``conflict``, ``denied``, ``unavailable`` (from the host) or ``decode`` (its answer was not
    what was expected)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message

    @property
    def is_transient(self) -> bool:
        """Whether retrying the event later may help."""
        return self.kind == "unavailable"


@dataclass
class Created:
    """What creating a resource returns."""

    name: str
    run_id: str
    version: str


def _call(fn, *args):
    _, _, wit_client = _wit()
    try:
        return fn(*args)
    except _Err as e:
        err = e.value
        kinds = {
            wit_client.ClientError_NotFound: "not-found",
            wit_client.ClientError_Invalid: "invalid",
            wit_client.ClientError_Conflict: "conflict",
            wit_client.ClientError_Denied: "denied",
            wit_client.ClientError_Unavailable: "unavailable",
        }
        raise ClientError(kinds.get(type(err), "unavailable"), str(err.value)) from None


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise ClientError("decode", str(e)) from None


class client:
    """The Conveyor API client: read and write resources through the host. Calls raise
    ``ClientError``."""

    @staticmethod
    def get_resource(resource_type: str, name: str) -> Resource:
        """Reads the current version of a resource."""
        _, _, wit_client = _wit()
        text = _call(wit_client.get_resource, resource_type, name)
        try:
            return Resource.parse(text)
        except ValueError as e:
            raise ClientError("decode", str(e)) from None

    @staticmethod
    def create_resource(resource: Union[Resource, Mapping[str, Any]]) -> Created:
        """Creates a resource (a ``Resource`` or a dict with ``name``, ``resource``, ``spec``);
        drivers listening to its type receive a ``create`` event."""
        _, _, wit_client = _wit()
        text = resource.to_json() if isinstance(resource, Resource) else json.dumps(resource)
        c = _call(wit_client.create_resource, text)
        return Created(name=c.name, run_id=c.run_id, version=c.version)

    @staticmethod
    def update_resource(resource: Resource) -> Resource:
        """Replaces a resource's state (its version is bumped and an ``update`` event sent) and
        returns what was stored."""
        _, _, wit_client = _wit()
        text = _call(wit_client.update_resource, resource.resource, resource.name, resource.to_json())
        try:
            return Resource.parse(text)
        except ValueError as e:
            raise ClientError("decode", str(e)) from None

    @staticmethod
    def get_resource_definition(name: str) -> dict:
        """Reads a resource definition: ``name``, ``description``, ``version``, ``schema``."""
        _, _, wit_client = _wit()
        return _decode(_call(wit_client.get_resource_definition, name))


class Driver:
    """A Conveyor CI driver. Subclass it, set ``name`` and ``resources`` (and ``events`` to
    receive only some events), and implement ``reconcile``."""

    name: str = ""
    """The driver's name: one NATS subject token (no ``.``, ``*``, ``>`` or whitespace)."""
    resources: List[str] = []
    """The resource types (resource definition names) whose events this driver receives."""
    events: List[str] = []
    """The event names wanted (``create``, ``update``, ``delete``, ``process``); empty is all."""

    def reconcile(self, payload: str, event: str, run_id: str, logger: Logger) -> DriverResult:
        """Handles one event. ``payload`` is the resource as JSON text (``Resource.parse``),
        ``event`` the event name, ``run_id`` the run's id, ``logger`` the run's log."""
        raise NotImplementedError


def export(driver: Type[Driver]) -> type:
    """Turns a ``Driver`` subclass into the component's ``WitWorld`` export. Assign the result
    to a module-level ``WitWorld`` in the app module: ``WitWorld = export(MyDriver)``.

    An exception escaping ``reconcile`` becomes a failed result naming it, with the traceback on
    the run's stderr (which the host records in the run's log)."""

    class WitWorld:
        def info(self):
            wit_types, _, _ = _wit()
            return wit_types.DriverInfo(
                name=driver.name, resources=list(driver.resources), events=list(driver.events)
            )

        def reconcile(self, ev):
            logger = Logger(ev.run_id, ev.message_id, ev.pipeline, ev.attempt)
            try:
                result = driver().reconcile(ev.payload, ev.name, ev.run_id, logger)
                if not isinstance(result, DriverResult):
                    raise TypeError(
                        f"reconcile returned {type(result).__name__}, not a DriverResult"
                    )
                return result._into_wit()
            # Every failure becomes a result, sys.exit() included.
            except BaseException as e:  # noqa: BLE001
                traceback.print_exc(file=sys.stderr)
                return DriverResult.failure(f"{type(e).__name__}: {e}")._into_wit()

    WitWorld.__name__ = f"WitWorld[{driver.__name__}]"
    return WitWorld

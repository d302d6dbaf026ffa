"""The FastAPI application: Ceilometer's v2 query API over a :class:`Store`."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, cast

import orjson
from fastapi import Body, Depends, FastAPI, Header, Query, Request, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)
from starlette.convertors import PathConvertor, register_url_convertor
from uuid_utils import uuid7

from nephoscope.api.auth import Authenticator, Principal
from nephoscope.api.errors import ApiError, ClientError, install_handlers
from nephoscope.api.guard import Guard, principal_of
from nephoscope.api.query import SAMPLE_FIELDS, check_text, parse_time, read_query, scoped
from nephoscope.api.query import Query as ReadQuery
from nephoscope.api.views import (
    isotime,
    meter_view,
    old_sample_view,
    resource_view,
    sample_view,
    statistics_view,
)
from nephoscope.config import ApiLimits, Settings
from nephoscope.counter import Counter
from nephoscope.messaging.errors import RejectedMessage
from nephoscope.messaging.meter import message_to_counter
from nephoscope.signing import SIGNATURE_FIELD, compute_signature
from nephoscope.storable import MAX_ID_LENGTH, check_metadata
from nephoscope.storage.base import (
    AGGREGATE_FUNCTIONS,
    CARDINALITY_FIELDS,
    GROUPBY_FIELDS,
    MAX_PERIOD,
    Condition,
    SampleFilter,
    Store,
)
from nephoscope.storage.derived import (
    DERIVED_METERS,
    derived_meter,
    derived_samples,
    meter_statistics,
)
from nephoscope.storage.rates import RATE, NotCumulative
from nephoscope.storage.usage import DEFAULT_MAX_GAP, usage

__all__ = ["create_app"]

LOG = logging.getLogger(__name__)

#: Samples returned when a query gives no ``limit`` (Ceilometer's ``default_api_return_limit``).
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1_000_000
METER_FIELDS: Final = ("resource_id", "project_id", "user_id", "source", "timestamp", "meter")
#: The longest gap ``/v2/usage`` bridges: 31 days.
MAX_USAGE_GAP: Final = 31 * 86_400


class _AnyPath(PathConvertor):
    """A path parameter of any characters: Starlette's ``path`` stops at a newline,
    which a resource id may hold."""

    regex = "(?s:.*)"


register_url_convertor("any_path", _AnyPath())

Token = Annotated[str | None, Header(alias="X-Auth-Token")]
QField = Annotated[list[str] | None, Query(alias="q.field", description="Field to filter on.")]
QOp = Annotated[list[str] | None, Query(alias="q.op", description="lt le eq ne ge gt")]
QValue = Annotated[list[str] | None, Query(alias="q.value")]
QType = Annotated[
    list[str] | None,
    Query(alias="q.type", description="integer float string boolean datetime, or empty"),
]
Limit = Annotated[int | None, Query(ge=1, le=MAX_LIMIT, description="Most samples returned.")]


def _json(data: Any, status: int = 200) -> Response:
    """A JSON answer, serialised once by orjson (no response model to validate against).

    Naive datetimes (the views' times) are written as ISO 8601 without an offset.
    """
    try:
        body = orjson.dumps(data)
    except TypeError:
        # orjson refuses integers beyond 64 bits (a posted sample's metadata may hold one).
        body = json.dumps(data, default=_json_default).encode("utf-8")
    return Response(body, status, media_type="application/json")


def _json_default(value: Any) -> str:
    """What the standard encoder writes for what it does not know: times as orjson does."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _principal(request: Request, token: Token = None) -> Principal:
    # The token parameter documents the header; Guard read it before the body.
    return principal_of(request.scope)


Caller = Annotated[Principal, Depends(_principal)]


class SampleIn(BaseModel):
    """A sample posted to ``/v2/meters/{name}`` (Ceilometer's ``OldSample``)."""

    model_config = ConfigDict(extra="ignore")

    counter_name: str | None = None
    counter_type: str | None = None
    counter_unit: str | None = None
    counter_volume: StrictInt | StrictFloat | str | None = None
    user_id: str | None = None
    project_id: str | None = None
    resource_id: str | None = None
    source: str | None = None
    timestamp: str | None = None
    resource_metadata: dict[str, Any] | None = None
    message_id: str | None = None
    message_signature: str | None = None


class ComplexQueryIn(BaseModel):
    """The body of ``/v2/query/samples``: ``filter`` and ``orderby`` are JSON text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    filter: str | None = None
    orderby: str | None = None
    limit: int | None = None

    @field_validator("limit", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # python-ceilometerclient sends the limit as it was typed: a string of
        # digits, which Ceilometer read as the number. Nothing else stands for one
        # (``true`` became 1, ``5.5`` became 5).
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 7:
            return int(value)
        return value


CAPABILITIES: Final = {
    "api": {
        "meters:query:simple": True,
        "meters:query:metadata": True,
        "meters:query:complex": False,
        "resources:query:simple": True,
        "resources:query:metadata": True,
        "resources:query:complex": False,
        "samples:query:simple": True,
        "samples:query:metadata": True,
        "samples:query:complex": True,
        "statistics:groupby": True,
        "statistics:query:simple": True,
        "statistics:query:metadata": True,
        "statistics:query:complex": False,
        "statistics:aggregation:standard": True,
        **{f"statistics:aggregation:selectable:{f}": True for f in (*AGGREGATE_FUNCTIONS, RATE)},
        "alarms:query:simple": False,
        "alarms:query:complex": False,
        "alarms:history:query:simple": False,
        "alarms:history:query:complex": False,
        "events:query:simple": False,
    },
    "storage": {"storage:production_ready": True},
    "event_storage": {"storage:production_ready": False},
}


QueryArgs = tuple[list[str], list[str], list[str], list[str]]


def _simple_query(
    q_field: QField = None, q_op: QOp = None, q_value: QValue = None, q_type: QType = None
) -> QueryArgs:
    """Ceilometer's ``q.field``/``q.op``/``q.value``/``q.type`` lists, as one parameter."""
    return q_field or [], q_op or [], q_value or [], q_type or []


SimpleQuery = Annotated[QueryArgs, Depends(_simple_query)]


def create_app(
    settings: Settings, store: Store, authenticate: Authenticator | None = None
) -> FastAPI:
    """The API over ``store``; ``authenticate`` defaults to one built from ``settings.api``."""
    auth = authenticate or Authenticator(settings.api)
    app = FastAPI(
        title="Nephoscope",
        version="2",
        description="Ceilometer v2 compatible query API",
        docs_url=None,
        redoc_url=None,
    )
    limits = settings.api.limits
    app.add_middleware(Guard, authenticate=auth, max_body_bytes=limits.max_body_bytes)
    install_handlers(app)
    # Links start with the configured public URL, or are relative: never the
    # request's Host header, which the caller chooses.
    base_url = settings.api.public_url

    @app.get("/", include_in_schema=False)
    def root() -> dict[str, Any]:
        return {"versions": {"values": [{"id": "v2", "status": "stable"}]}}

    @app.get("/v2/capabilities")
    def capabilities(caller: Caller) -> Response:
        return _json(CAPABILITIES)

    @app.get("/v2/meters")
    def list_meters(
        caller: Caller,
        q: SimpleQuery,
    ) -> Response:
        query = read_query(caller, *q, limits=limits, allowed=METER_FIELDS)
        if not query.possible:
            return _json([])
        return _json([meter_view(m) for m in store.meters(query.filter)])

    @app.get("/v2/meters/{meter_name}")
    def get_samples_of_meter(
        meter_name: str,
        caller: Caller,
        q: SimpleQuery,
        limit: Limit = None,
    ) -> Response:
        query = _meter_query(caller, meter_name, q, limits)
        if not query.possible:
            return _json([])
        derived = derived_meter(store, query.filter)
        if derived is not None:
            samples = derived_samples(store, derived, query.filter, limit or DEFAULT_LIMIT)
        else:
            samples = store.samples(query.filter, limit=limit or DEFAULT_LIMIT)
        return _json([old_sample_view(s) for s in samples])

    @app.post("/v2/meters/{meter_name}", status_code=201)
    def post_samples(
        meter_name: str,
        caller: Caller,
        samples: Annotated[list[dict[str, Any]], Body(description="Samples (OldSample)")],
    ) -> Response:
        check_text(meter_name, "meter name")
        if len(samples) > limits.max_posted_samples:
            raise ClientError(
                f"{len(samples)} samples: at most {limits.max_posted_samples} in one request "
                "(api.limits.max_posted_samples)"
            )
        if meter_name in DERIVED_METERS and not caller.writes_any_project:
            # Stored samples of the name would stand in for the derived meter in
            # every project's answers (an admin's included).
            raise ApiError(
                403,
                f"{meter_name} is computed from {DERIVED_METERS[meter_name].source}: "
                "only an admin or a service posts samples of it",
            )
        counters = [
            _counter(settings, caller, meter_name, sample, index)
            for index, sample in enumerate(samples)
        ]
        _store_new(store, counters)
        recorded = isotime(datetime.now(UTC))
        posted = [
            {
                "counter_name": c.name,
                "counter_type": c.type,
                "counter_unit": c.unit,
                "counter_volume": c.volume,
                "user_id": c.user_id,
                "project_id": c.project_id,
                "resource_id": c.resource_id,
                "source": c.source,
                "timestamp": isotime(c.timestamp),
                "recorded_at": recorded,
                "message_id": c.id,
                "resource_metadata": dict(c.resource_metadata),
            }
            for c in counters
        ]
        return _json(posted, 201)

    @app.get("/v2/meters/{meter_name}/statistics")
    def get_statistics(
        meter_name: str,
        caller: Caller,
        q: SimpleQuery,
        period: Annotated[int | None, Query(ge=0, le=MAX_PERIOD)] = None,
        groupby: Annotated[list[str] | None, Query()] = None,
        aggregate_func: Annotated[list[str] | None, Query(alias="aggregate.func")] = None,
        aggregate_param: Annotated[list[str] | None, Query(alias="aggregate.param")] = None,
    ) -> Response:
        query = _meter_query(caller, meter_name, q, limits)
        names: dict[str, str] = {}
        if len(groupby or ()) > limits.max_groupby:
            raise ClientError(
                f"at most {limits.max_groupby} groupby fields (api.limits.max_groupby)"
            )
        if len(aggregate_func or ()) > len(AGGREGATE_FUNCTIONS) + len(CARDINALITY_FIELDS):
            raise ClientError("too many aggregate.func: ask each function once")
        for name in groupby or []:
            check_text(name, "groupby", MAX_ID_LENGTH + len("resource_metadata."))
            key = name
            if key.startswith("resource_metadata."):
                key = "metadata." + key[len("resource_metadata.") :]
            parts = key[len("metadata.") :].split(".") if key.startswith("metadata.") else []
            if key not in GROUPBY_FIELDS and not (
                parts and all(p and '"' not in p and "\\" not in p for p in parts)
            ):
                raise ClientError(
                    f"Invalid groupby fields: {name}: use {', '.join(GROUPBY_FIELDS)} "
                    "or resource_metadata.<key>"
                )
            names[key] = name
        funcs, params = aggregate_func or [], aggregate_param or []
        if len(params) > len(funcs):
            raise ClientError("aggregate.param given without its aggregate.func")
        aggregates: list[tuple[str, str | None]] = []
        rate = False
        # Ceilometer pairs parameters with functions by position (the client sends
        # parametrised functions first); parameters as many as the cardinality
        # functions go to those, wherever they stand.
        cardinalities = [i for i, func in enumerate(funcs) if func == "cardinality"]
        if len(params) == len(cardinalities):
            paired = dict(zip(cardinalities, params, strict=True))
        else:
            paired = dict(enumerate(params))
        for index, func in enumerate(funcs):
            param = paired.get(index) or None
            if func == RATE:
                # Computed here from ordered samples, not by the store.
                rate = True
                continue
            if func not in AGGREGATE_FUNCTIONS:
                raise ClientError(
                    f"Invalid aggregation function: {func}: use "
                    f"{', '.join((*AGGREGATE_FUNCTIONS, RATE))}"
                )
            if func == "cardinality":
                if param not in CARDINALITY_FIELDS:
                    raise ClientError(
                        "Invalid input for field/attribute aggregate.param: cardinality counts "
                        f"one of {', '.join(CARDINALITY_FIELDS)}"
                    )
            else:
                param = None
            aggregates.append((func, param))
        if not query.possible:
            return _json([])
        try:
            stats = meter_statistics(
                store, query.filter, period or None, list(names), aggregates, rate=rate
            )
        except NotCumulative as exc:
            raise ClientError(f"Invalid aggregation function: {exc}") from None
        views = statistics_view(stats, names, bool(aggregates) or rate)
        if rate:
            for view in views:
                # A period without two samples of one resource has no rate.
                view["aggregate"].setdefault(RATE, None)
        return _json(views)

    @app.get("/v2/usage")
    def get_usage(
        caller: Caller,
        start: Annotated[str, Query(description="From this time (ISO 8601), included.")],
        end: Annotated[str | None, Query(description="Up to this time, excluded; now.")] = None,
        project_id: Annotated[str | None, Query(description="The project; a member's own.")] = None,
        max_gap: Annotated[
            int, Query(ge=1, le=MAX_USAGE_GAP, description="Longest gap counted, seconds.")
        ] = int(DEFAULT_MAX_GAP.total_seconds()),
    ) -> Response:
        since = parse_time(check_text(start, "start"), "start")
        until = parse_time(check_text(end, "end"), "end") if end else datetime.now(UTC)
        if since >= until:
            raise ClientError(f"start ({isotime(since)}) must be before end ({isotime(until)})")
        if project_id is not None:
            check_text(project_id, "project_id")
        query = scoped(caller, ReadQuery(SampleFilter(project_id=project_id)))
        if not query.possible:
            return _json([])
        found = usage(store, since, until, query.filter.project_id, timedelta(seconds=max_gap))
        return _json([u.as_dict() for u in found])

    @app.get("/v2/samples")
    def list_samples(
        caller: Caller,
        q: SimpleQuery,
        limit: Limit = None,
    ) -> Response:
        query = read_query(caller, *q, limits=limits)
        if not query.possible:
            return _json([])
        samples = store.samples(query.filter, limit=limit or DEFAULT_LIMIT)
        return _json([sample_view(s) for s in samples])

    @app.get("/v2/samples/{sample_id:any_path}")
    def get_sample(sample_id: str, caller: Caller) -> Response:
        check_text(sample_id, "sample id")
        query = scoped(caller, ReadQuery(SampleFilter(message_id=sample_id)))
        found = store.samples(query.filter, limit=1) if query.possible else []
        if not found:
            raise ApiError(404, f"Sample {sample_id} Not Found")
        return _json(sample_view(found[0]))

    @app.get("/v2/resources")
    def list_resources(
        caller: Caller,
        q: SimpleQuery,
        meter_links: Annotated[int, Query(ge=0, le=1)] = 1,
    ) -> Response:
        query = read_query(caller, *q, limits=limits)
        if not query.possible:
            return _json([])
        views = [resource_view(r, base_url) for r in store.resources(query.filter)]
        if not meter_links:
            for view in views:
                view["links"] = view["links"][:1]
        return _json(views)

    @app.get("/v2/resources/{resource_id:any_path}")
    def get_resource(resource_id: str, caller: Caller) -> Response:
        check_text(resource_id, "resource id")
        query = scoped(caller, ReadQuery(SampleFilter(resource_id=resource_id)))
        found = store.resources(query.filter) if query.possible else []
        if not found:
            raise ApiError(404, f"Resource {resource_id} Not Found")
        return _json(resource_view(found[0], base_url))

    @app.post("/v2/query/samples")
    def query_samples(caller: Caller, body: ComplexQueryIn) -> Response:
        from nephoscope.api.complex import run_complex_query

        samples = run_complex_query(store, caller, body.filter, body.orderby, body.limit, limits)
        return _json([sample_view(s) for s in samples])

    return app


def _meter_query(caller: Principal, meter_name: str, q: QueryArgs, limits: ApiLimits) -> ReadQuery:
    check_text(meter_name, "meter name")
    return read_query(
        caller,
        *q,
        limits=limits,
        allowed=SAMPLE_FIELDS,
        base=SampleFilter(meter=meter_name),
    )


def _counter(
    settings: Settings, caller: Principal, meter_name: str, raw: dict[str, Any], index: int
) -> Counter:
    """One posted sample, read through the collector's path: signed message -> Counter."""
    where = f"sample {index}"
    try:
        sample = SampleIn.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ClientError(f"{where}: {problems}") from None
    if sample.counter_name is not None and sample.counter_name != meter_name:
        raise ClientError(
            f"{where}: counter_name {sample.counter_name!r} is not the meter of the URL "
            f"({meter_name!r})"
        )
    signed = sample.message_signature is not None
    # A signed sample is verified as sent; an unsigned one is read, then signed here.
    message: dict[str, Any] = dict(raw) if signed else sample.model_dump(exclude_none=True)
    for key, value in message.items():
        if isinstance(value, str):
            check_text(value, f"{where}: {key}", None)
    if not signed:
        message["counter_name"] = meter_name
        if caller.user_id is not None:
            message.setdefault("user_id", caller.user_id)
        if caller.project_id is not None:
            message.setdefault("project_id", caller.project_id)
        message.setdefault("source", "openstack")
        message.setdefault("timestamp", datetime.now(UTC).isoformat())
        message.setdefault("resource_metadata", {})
        message.setdefault("message_id", str(uuid7()))
        for key in ("user_id", "project_id", "user_name", "project_name", "monotonic_time"):
            message.setdefault(key, None)
        problem = check_metadata(message["resource_metadata"])
        if problem is not None:
            raise ClientError(f"{where}: resource_metadata: {problem}")
        volume = message.get("counter_volume")
        if isinstance(volume, float) and volume.is_integer():
            message["counter_volume"] = int(volume)
        message[SIGNATURE_FIELD] = compute_signature(
            message, settings.metering_secret, json_values=True
        )
    try:
        counter = message_to_counter(message, settings.metering_secret)
    except RejectedMessage as exc:
        raise ClientError(f"{where}: {exc.reason}") from None
    return _scoped_counter(caller, counter)


def _scoped_counter(caller: Principal, counter: Counter) -> Counter:
    """``counter`` as ``caller`` may write it: a member (signature or not) writes only
    its own project's samples, as itself; admins and services write any."""
    if caller.writes_any_project:
        return counter
    if counter.project_id not in (None, caller.project_id):
        raise ApiError(403, f"Not Authorized to post samples for project {counter.project_id}")
    if counter.user_id not in (None, caller.user_id):
        raise ApiError(403, f"Not Authorized to post samples for user {counter.user_id}")
    if counter.project_id is None or counter.user_id is None:
        counter = replace(counter, project_id=caller.project_id, user_id=caller.user_id)
    return counter


def _store_new(store: Store, counters: list[Counter]) -> None:
    """Store ``counters``, all of them new: a message id stored before (or twice in the
    request) is a conflict, and then nothing is stored."""
    ids = [cast("str", c.id) for c in counters]
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise ClientError(f"message_id {repeated} is given twice")
    if not ids:
        return
    taken = store.samples(
        SampleFilter(), limit=len(ids), where=Condition("message_id", "in", tuple(ids))
    )
    if taken:
        raise ApiError(
            409,
            f"message_id {taken[0].message_id} is already stored"
            + (f" (and {len(taken) - 1} more)" if len(taken) > 1 else "")
            + ": nothing was stored",
        )
    result = store.write_batch(counters)
    if result.duplicates:
        # Another writer stored some of these ids between the look and the write.
        raise ApiError(
            409,
            f"{result.duplicates} message id(s) were stored meanwhile by another writer; "
            f"{result.stored} of {len(counters)} samples were stored",
        )

"""Kafka events (kafka-python), protobuf-encoded. Topics, partitions and consumer groups are configured here.

Every event carries a unique id; consumers skip ids they have already handled (idempotent), and a message that
does not decode goes to the dead-letter topic while the consumer carries on.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from saim.errors import SaimError, Unavailable
from saim.v1 import events_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    message: type[Message] | None
    partitions: int = 1
    retention_ms: int = 7 * 24 * 3600 * 1000


ANNOTATION_SUBMITTED = TopicSpec("saim.annotation.submitted", events_pb2.AnnotationSubmitted, partitions=3)
BATCH_COMPLETED = TopicSpec("saim.batch.completed", events_pb2.BatchCompleted)
MODEL_PUBLISHED = TopicSpec("saim.model.published", events_pb2.ModelPublished)
# Sharded scoring: the selector sends part k of the pool to partition k; scorer workers share the partitions in one
# consumer group, so up to this many workers score in parallel (a killed worker's partitions move to the others).
SCORING_PARTS = 8
SCORING_REQUESTED = TopicSpec(
    "saim.scoring.requested", events_pb2.ScoringRequested, partitions=SCORING_PARTS, retention_ms=24 * 3600 * 1000
)
DEAD_LETTER = TopicSpec("saim.dead-letter", None)
TOPICS = (ANNOTATION_SUBMITTED, BATCH_COMPLETED, MODEL_PUBLISHED, SCORING_REQUESTED, DEAD_LETTER)
BY_NAME = {t.name: t for t in TOPICS}

# Consumer groups, one stable id per role. The annotator replicas read model events as a broadcast, without a group
# (each from the latest offset, and their reconcile covers what came before), so a restart leaves no group behind.
GROUP_SELECTOR = "saim-selector"
GROUP_TRAINER = "saim-trainer"
GROUP_SCORER = "saim-scorer"

KAFKA_CLIENT_DEFAULTS = {"request_timeout_ms": 20000, "reconnect_backoff_max_ms": 2000}
CONSUMER_DEFAULTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 600000}


def new_meta(producer: str) -> events_pb2.EventMeta:
    return events_pb2.EventMeta(event_id=uuid.uuid4().hex, created_unix_ms=int(time.time() * 1000), producer=producer)


def _admin(bootstrap: str, timeout_s: float) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="saim-admin", **KAFKA_CLIENT_DEFAULTS)
        except Exception as exc:
            if time.monotonic() > deadline:
                raise Unavailable(f"Kafka at {bootstrap} not reachable ({exc})") from exc
            time.sleep(0.5)


def ensure_topics(bootstrap: str, replication_factor: int = 1, timeout_s: float = 30.0) -> None:
    """Create the saim topics that are missing, with `replication_factor` replicas (SAIM_KAFKA_REPLICATION_FACTOR;
    production declares them as Strimzi KafkaTopic resources), then check every topic's partitions."""
    admin = _admin(bootstrap, timeout_s)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(t.name, t.partitions, replication_factor, topic_configs={"retention.ms": str(t.retention_ms)})
            for t in TOPICS
            if t.name not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        _check_partitions(admin)
    finally:
        admin.close()


def check_topics(bootstrap: str, timeout_s: float = 15.0) -> None:
    """A service's start: every saim topic exists with the partitions saim sends to (a SaimError that says how to fix
    it otherwise). A broker that cannot be reached is not this check's concern: the consumer keeps reconnecting."""
    try:
        admin = _admin(bootstrap, timeout_s)
    except Unavailable as exc:
        log.warning("topics not checked: %s", exc)
        return
    try:
        _check_partitions(admin)
    except SaimError:
        raise
    except Exception as exc:  # the broker could not describe its topics: the consumer's own errors will say more
        log.warning("topics not checked: %s", exc)
    finally:
        admin.close()


def _check_partitions(admin: KafkaAdminClient) -> None:
    existing = set(admin.list_topics())
    named = [t.name for t in TOPICS if t.name in existing]
    found = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(named)} if named else {}
    problems = [topic_problem(t, found.get(t.name)) for t in TOPICS]
    if any(problems):
        raise SaimError("; ".join(p for p in problems if p))


def topic_problem(spec: TopicSpec, partitions: int | None) -> str | None:
    """What is wrong with a topic as the broker has it (None: nothing). Fewer partitions than saim's would leave the
    sharded scoring's parts unsent (the selector sends part k to partition k) or serialise what should not be."""
    if not partitions:
        return f"topic {spec.name} does not exist: run `saim bootstrap` (or apply deploy/k8s's KafkaTopic resources)"
    if partitions < spec.partitions:
        return (
            f"topic {spec.name} has {partitions} partitions, saim needs {spec.partitions} "
            f"(kafka-topics.sh --alter --topic {spec.name} --partitions {spec.partitions})"
        )
    return None


class EventPublisher:
    def __init__(self, bootstrap: str, producer_name: str):
        self.producer_name = producer_name
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            retries=5,
            linger_ms=0,
            client_id=producer_name,
            **KAFKA_CLIENT_DEFAULTS,
        )

    def publish(self, topic: TopicSpec, event: Message, key: str | None = None, partition: int | None = None) -> None:
        """Send and wait for the broker's acknowledgement (at-least-once: state is stored before its event)."""
        future = self._producer.send(
            topic.name, value=event.SerializeToString(), key=key.encode() if key else None, partition=partition
        )
        future.get(timeout=30)

    def send_raw(self, topic_name: str, value: bytes, key: bytes | None = None) -> None:
        self._producer.send(topic_name, value=value, key=key).get(timeout=30)

    def close(self) -> None:
        self._producer.close(timeout=5)


Handler = Callable[[TopicSpec, Message], None]


class EventConsumer:
    """A background thread polling topics for one consumer group; commits after the handler returns.

    `max_poll_records` 1 (work queues such as scoring, where one record is minutes of work) commits each record as
    soon as it is handled, so a killed worker's successor redoes at most the record in hand."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str | None,
        topics: list[TopicSpec],
        handler: Handler,
        dead_letter: EventPublisher | None = None,
        on_lag: Callable[[str, float], None] | None = None,
        dedup_size: int = 10000,
        max_poll_records: int = 500,
    ):
        self.bootstrap, self.group_id, self.topics, self.handler = bootstrap, group_id, topics, handler
        self.dead_letter, self.on_lag = dead_letter, on_lag
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedup_size, self.max_poll_records = dedup_size, max_poll_records
        self.assignment: frozenset[tuple[str, int]] = frozenset()  # (topic, partition) held after the last poll
        self._stop = threading.Event()
        self.name = group_id or "broadcast"  # group_id None: a broadcast reader, no group, no commits
        self._thread = threading.Thread(target=self._run, name=f"consumer-{self.name}", daemon=True)

    def start(self) -> EventConsumer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _connect(self) -> KafkaConsumer:
        return KafkaConsumer(
            *[t.name for t in self.topics],
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            auto_offset_reset="earliest" if self.group_id else "latest",
            enable_auto_commit=False,
            client_id=self.name,
            max_poll_records=self.max_poll_records,
            **CONSUMER_DEFAULTS,
            **KAFKA_CLIENT_DEFAULTS,
        )

    def _run(self) -> None:
        consumer = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._connect()
                batch = consumer.poll(timeout_ms=500)
                self.assignment = frozenset((tp.topic, tp.partition) for tp in consumer.assignment())
                for records in batch.values():
                    for record in records:
                        self._dispatch(record)
                if batch and self.group_id:
                    consumer.commit()
            except Exception:
                self.assignment = frozenset()
                log.exception("consumer %s failed; reconnecting", self.name)
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:
                        pass
                consumer = None
                self._stop.wait(1.0)
        if consumer is not None:
            consumer.close()

    def _dispatch(self, record) -> None:
        spec = BY_NAME.get(record.topic)
        try:
            if spec is None or spec.message is None:
                raise TypeError(f"no event type for topic {record.topic}")
            event: Any = spec.message.FromString(record.value)
            event_id = event.meta.event_id
            if not event_id:
                raise DecodeError("event without meta.event_id")
        except (DecodeError, AttributeError, TypeError) as exc:
            log.warning(
                "malformed event on %s offset %s: %s; sent to %s", record.topic, record.offset, exc, DEAD_LETTER.name
            )
            if self.dead_letter is not None:
                self.dead_letter.send_raw(DEAD_LETTER.name, record.value or b"", record.key)
            return
        if event_id in self._seen:
            return
        if self.on_lag is not None:
            self.on_lag(record.topic, max(0.0, time.time() - event.meta.created_unix_ms / 1000))
        self.handler(spec, event)
        self._seen[event_id] = None
        if len(self._seen) > self._dedup_size:
            self._seen.popitem(last=False)

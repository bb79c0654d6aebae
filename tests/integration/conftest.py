"""Integration tier: a real Kafka-protocol broker, a real S3 endpoint and the three services as processes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from saim.data import phantom
from saim.data.dataset import NnUNetDataset
from saim.events import GROUP_SELECTOR, MODEL_PUBLISHED, TOPICS
from saim.stack.local import LocalStack
from saim.stack.virtual import VirtualAnnotator
from saim.v1 import selector_pb2, selector_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from tests.stack_settings import stack_settings
from tests.waiting import poll

# Tiny training so the loop runs in about a minute on two cores; the loop's mechanics are what is tested here.
FAST = stack_settings(epochs=1, steps_per_epoch=3, batch_size=2, iterations=2)


@dataclass
class Observed:
    topic: str
    value: bytes
    key: bytes | None
    received: float
    metadata_existed: bool | None = None


@dataclass
class Observer:
    """An independent consumer (confluent-kafka / librdkafka) that records every saim event as it arrives and,
    for model events, whether the version's metadata was already in the bucket at that moment."""

    bootstrap: str
    store: object
    records: list[Observed] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from confluent_kafka import Consumer

        from saim.v1 import events_pb2

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "independent-observer",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([t.name for t in TOPICS])
        try:
            while not self.stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                rec = Observed(msg.topic(), msg.value(), msg.key(), time.time())
                if msg.topic() == "saim.model.published":
                    event = events_pb2.ModelPublished.FromString(msg.value())
                    rec.metadata_existed = self.store.exists(event.metadata_key)
                self.records.append(rec)
        finally:
            consumer.close()

    def of(self, topic: str) -> list[Observed]:
        return [r for r in self.records if r.topic == topic]


@dataclass
class Run:
    stack: LocalStack
    observer: Observer
    annotators: list[VirtualAnnotator]
    dataset: NnUNetDataset

    def trainer(self, token: str | None = None):
        return trainer_pb2_grpc.TrainerServiceStub(self.stack.channel("trainer", token))

    def selector(self, token: str | None = None):
        return selector_pb2_grpc.SelectorServiceStub(self.stack.channel("selector", token))


def annotator_serves(stack: LocalStack, version_number: int) -> bool:
    """The annotator reads model events without a consumer group: what it serves is what tells (its metrics)."""
    import urllib.request

    url = f"http://127.0.0.1:{stack.ports['annotator_metrics']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return f'saim_model_version{{service="annotator"}} {float(version_number)}' in text


def committed_to_end(bootstrap: str, group: str, topic: str) -> bool:
    """True once the consumer group has committed past every message of the topic (it has handled them all)."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        ends = consumer.end_offsets(partitions)
        committed = admin.list_group_offsets({group: partitions}).get(group, {})
        return all(
            ends[p] == 0 or (committed.get(p) is not None and committed[p].offset >= ends[p]) for p in partitions
        )
    finally:
        consumer.close()
        admin.close()


@pytest.fixture(scope="package")
def completed_run(tmp_path_factory):
    """Runs the whole SAIM loop once (pre-train + 2 batches of 2 series, 2 virtual annotators)."""
    root = tmp_path_factory.mktemp("saim-run")
    ds = NnUNetDataset(phantom.generate(root / "dataset", num_series=10, depth=4, size=48, seed=0))
    stack = LocalStack(root / "stack", settings=dict(FAST))
    observer = None
    stop = threading.Event()
    try:
        stack.start_broker()
        stack.start_s3()
        stack.import_dataset(ds.root, seed=0)
        observer = Observer(stack.kafka_bootstrap, stack.store())
        threading.Thread(target=observer.run, daemon=True).start()
        stack.start_services()
        stack.wait_serving(timeout_s=300)
        gt = {case: ds.load_case(case)[1] for case in ds.cases}
        annotators = [
            VirtualAnnotator(
                f"ann-{i}",
                stack.target("annotator"),
                stack.target("selector"),
                gt,
                2,
                stop,
                stack.issue_token(f"ann-{i}"),
            )
            for i in range(2)
        ]
        for a in annotators:
            a.start()
        run = Run(stack, observer, annotators, ds)
        trainer, selector = run.trainer(), run.selector()

        def finished():
            models = trainer.ListModels(trainer_pb2.ListModelsRequest(), timeout=10).models
            status = selector.GetStatus(selector_pb2.GetStatusRequest(), timeout=10)
            return status.complete and any(mv.iteration == 2 for mv in models)

        poll(finished, 300, "two retrain cycles")
        stop.set()
        for a in annotators:
            a.join(timeout=30)
        poll(lambda: len(observer.of("saim.model.published")) >= 3, 30, "the observer to see all model events")
        poll(
            lambda: committed_to_end(stack.kafka_bootstrap, GROUP_SELECTOR, MODEL_PUBLISHED.name),
            60,
            f"{GROUP_SELECTOR} to handle the last model event",
        )
        poll(lambda: annotator_serves(stack, 2), 60, "the annotator to serve the last model version")
        observer.stop.set()  # freeze what was observed: later tests (replays) must not change it
        yield run
    finally:
        stop.set()
        if observer is not None:
            observer.stop.set()
        stack.stop()

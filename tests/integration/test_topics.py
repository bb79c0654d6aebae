"""Kafka as deployed, against a real broker (tansu): topics are created with the configured replication factor, and a
topic with fewer partitions than saim sends to is refused by name, by `saim bootstrap`'s ensure_topics and by a
service at its start (exit code 2, before it serves), never found later as parts that are never scored."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from saim.errors import SaimError
from saim.events import SCORING_REQUESTED, TOPICS, check_topics, ensure_topics
from saim.stack.local import LocalStack
from tests.waiting import poll


@pytest.fixture
def broker(tmp_path):
    stack = LocalStack(tmp_path / "stack")
    try:
        stack.start_broker()  # creates saim's topics with one replica
        admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        yield stack, admin
        admin.close()
    finally:
        stack.stop()


def _replicas(admin: KafkaAdminClient, topic: str) -> list[int]:
    return [len(p["replica_nodes"]) for t in admin.describe_topics([topic]) for p in t["partitions"]]


def _recreate(admin: KafkaAdminClient, topic: str, partitions: int) -> None:
    admin.delete_topics([topic])
    poll(lambda: topic not in admin.list_topics(), 10, f"{topic} to be deleted")
    admin.create_topics([NewTopic(topic, partitions, 1)])


def test_topics_are_created_with_the_configured_replication_factor(broker):
    stack, admin = broker
    assert set(_replicas(admin, SCORING_REQUESTED.name)) == {1}
    check_topics(stack.kafka_bootstrap)  # as the embedded stack made them: nothing to say
    admin.delete_topics([SCORING_REQUESTED.name])
    poll(lambda: SCORING_REQUESTED.name not in admin.list_topics(), 10, "the topic to be deleted")
    ensure_topics(stack.kafka_bootstrap, replication_factor=3)
    assert _replicas(admin, SCORING_REQUESTED.name) == [3] * SCORING_REQUESTED.partitions
    assert {t.name for t in TOPICS} <= set(admin.list_topics())


def test_a_topic_with_too_few_partitions_is_refused_by_name(broker):
    stack, admin = broker
    _recreate(admin, SCORING_REQUESTED.name, 2)
    message = r"topic saim.scoring.requested has 2 partitions, saim needs 8 \(kafka-topics.sh --alter"
    with pytest.raises(SaimError, match=message):
        check_topics(stack.kafka_bootstrap)
    with pytest.raises(SaimError, match=message):
        ensure_topics(stack.kafka_bootstrap)  # an existing topic is not silently accepted by `saim bootstrap`


def test_a_service_started_against_such_a_topic_exits_with_the_reason(broker):
    stack, admin = broker
    _recreate(admin, SCORING_REQUESTED.name, 2)
    env = {
        **os.environ,
        "SAIM_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        # the check comes before any connection to storage: these are never reached
        "SAIM_S3_ENDPOINT": "127.0.0.1:9",
        "SAIM_S3_ACCESS_KEY": "unused",
        "SAIM_S3_SECRET_KEY": "unused",
        "SAIM_AUTH": "false",
        "SAIM_GRPC_PORT": "0",
        "SAIM_METRICS_PORT": "0",
        "SAIM_TORCH_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, "-m", "services.trainer"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "topic saim.scoring.requested has 2 partitions, saim needs 8" in out.stderr  # at start: it never served

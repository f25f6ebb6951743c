"""SQS through boto3: queues, batched sends, queue counts (no Airflow import).

Clients honour the standard AWS environment (``AWS_ENDPOINT_URL_SQS``, ``AWS_DEFAULT_REGION``,
keys), which is how a worker, the CLI and the tests find their queue. SQS cannot list a queue,
so what is known about chunks comes from their records; the queue gives only counts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from typing import Any

from meshing_core.errors import MeshingError
from meshing_core.queue.messages import ChunkTask

log = logging.getLogger(__name__)

SEND_BATCH = 10  # SQS's most messages per SendMessageBatch
SEND_BATCH_BYTES = 1024 * 1024  # and most bytes per batch
DEAD_LETTER_SUFFIX = "-dead-letter"
MAX_HOLD_S = 12 * 3600  # SQS keeps a received message invisible at most 12 h in all


class QueueError(MeshingError):
    """A queue that cannot be reached, found or sent to."""


def _procedure_keys() -> dict[str, str]:
    """Keys from cloud-volume's ``aws-secret.json`` (the procedure's ``aws-secret``, mounted
    in pods), used only when the environment names no keys."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return {}
    from cloudfiles.secrets import secretpath

    path = secretpath("aws-secret.json")
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        secret = json.load(handle)
    keys = {
        "aws_access_key_id": secret.get("AWS_ACCESS_KEY_ID"),
        "aws_secret_access_key": secret.get("AWS_SECRET_ACCESS_KEY"),
        "aws_session_token": secret.get("AWS_SESSION_TOKEN") or None,
    }
    return {k: v for k, v in keys.items() if v}


def sqs_client(region: str | None = None) -> Any:
    """A boto3 SQS client from the environment (endpoint, region, keys), else from
    cloud-volume's ``aws-secret.json``."""
    import boto3

    region = region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    return boto3.client("sqs", region_name=region or "us-east-1", **_procedure_keys())


def _fail(action: str, queue: str, exc: Exception) -> QueueError:
    return QueueError(
        f"SQS {action} on {queue} failed ({type(exc).__name__}: {' '.join(str(exc).split())}): "
        "check the queue name/URL and the AWS environment (AWS_ENDPOINT_URL_SQS, region, keys)"
    )


def queue_url(client: Any, queue: str) -> str:
    """The URL of an existing queue given by URL or name (never creates one)."""
    if queue.startswith(("http://", "https://")):
        return queue
    try:
        return str(client.get_queue_url(QueueName=queue)["QueueUrl"])
    except Exception as exc:  # botocore's errors: one line naming the queue
        raise _fail("GetQueueUrl", queue, exc) from exc


def ensure_queues(
    client: Any, name: str, *, max_receive_count: int, visibility_timeout_s: int
) -> tuple[str, str]:
    """The queue ``name`` and its dead-letter queue, created or reconfigured: (url, dlq url)."""
    try:
        dead = client.create_queue(QueueName=name + DEAD_LETTER_SUFFIX)["QueueUrl"]
        dead_arn = client.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        attributes = {
            "VisibilityTimeout": str(int(visibility_timeout_s)),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dead_arn, "maxReceiveCount": str(int(max_receive_count))}
            ),
        }
        url = client.create_queue(QueueName=name)["QueueUrl"]
        client.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    except Exception as exc:
        raise _fail("CreateQueue", name, exc) from exc
    return str(url), str(dead)


def send_tasks(client: Any, url: str, tasks: Iterable[ChunkTask]) -> int:
    """Send the tasks in SendMessageBatch calls (10 messages, 1 MiB each); returns the count."""
    sent = 0
    entries: list[dict[str, str]] = []
    size = 0

    def flush() -> None:
        nonlocal sent, entries, size
        if not entries:
            return
        try:
            answer = client.send_message_batch(QueueUrl=url, Entries=entries)
        except Exception as exc:
            raise _fail("SendMessageBatch", url, exc) from exc
        failed = answer.get("Failed") or []
        if failed:
            first = failed[0]
            raise QueueError(
                f"SQS refused {len(failed)} of {len(entries)} message(s) to {url}: "
                f"{first.get('Code')}: {first.get('Message')}"
            )
        sent += len(entries)
        entries, size = [], 0

    for task in tasks:
        body = task.encode()
        if len(entries) == SEND_BATCH or size + len(body.encode()) > SEND_BATCH_BYTES:
            flush()
        entries.append({"Id": str(len(entries)), "MessageBody": body})
        size += len(body.encode())
    flush()
    log.info("sent %d message(s) to %s", sent, url)
    return sent


def queue_counts(client: Any, url: str) -> dict[str, int]:
    """Visible and in-flight (received, not deleted) messages: SQS's approximate counts."""
    try:
        attributes = client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
    except Exception as exc:
        raise _fail("GetQueueAttributes", url, exc) from exc
    return {
        "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
    }


def max_receive_count(client: Any, url: str) -> int | None:
    """The queue's redrive ``maxReceiveCount``, or None for a queue with no dead-letter queue."""
    try:
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
    except Exception as exc:
        raise _fail("GetQueueAttributes", url, exc) from exc
    policy = attributes.get("Attributes", {}).get("RedrivePolicy")
    return int(json.loads(policy)["maxReceiveCount"]) if policy else None


def prepare_graph_queue(config: Any, client: Any) -> dict[str, Any]:
    """The graph's ``sqs`` queue and its dead-letter queue, created when absent (a setup step).

    A queue given by URL in ``sqs.queue`` is the user's: it is only checked, never changed.
    The queue's own visibility timeout is the longest layer's; workers hold each message with
    its layer's.
    """
    queue = config.queue
    if queue.startswith(("http://", "https://")):
        url = queue_url(client, queue)
        queue_counts(client, url)  # reachable: one line now, not in every batch
        return {
            "queue": url,
            "dead_letter": None,
            "max_receive_count": max_receive_count(client, url),
        }
    longest = max(
        int(config.layer_settings(layer)["visibility_timeout_s"])
        for layer in range(2, int(config.n_layers) + 1)
    )
    receives = int(config.sqs["max_receive_count"])
    url, dead = ensure_queues(
        client, queue, max_receive_count=receives, visibility_timeout_s=longest
    )
    return {"queue": url, "dead_letter": dead, "max_receive_count": receives}


def dead_letter_name(url: str) -> str:
    """The dead-letter queue's name of the queue at ``url`` (this project's naming)."""
    return url.rstrip("/").rsplit("/", 1)[-1] + DEAD_LETTER_SUFFIX

"""Clients from Airflow connections (provider hooks), for the tasks and triggers of a DAG.

An AWS connection may set an endpoint and region (``extra``: ``endpoint_url``,
``region_name``); without the connection (or a field), boto3's standard environment applies
(``AWS_ENDPOINT_URL_SQS``, ``AWS_DEFAULT_REGION``, keys), as for the CLI and the workers.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def sqs_client_for(aws_conn_id: str | None) -> Any:
    """A boto3 SQS client through the Amazon provider's ``SqsHook``."""
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook

    return SqsHook(aws_conn_id=aws_conn_id).get_conn()

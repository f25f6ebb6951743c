"""``kubernetes`` mode: each mapped batch is a pod running the batch command in the worker image.

The pod runs ``python -m meshing_core mesh --graph G --layer L --timestamp T
--chunk-index-range A B --workers C`` (``plan.batch_command``: the same batch unit as ``local``
and ``mesh --chunk-index-range``), which attaches to the run's lease and renews it while it
meshes. C is the layer's CPU request rounded down (at least 1). Requests and limits come from
the layer's settings; the secrets the procedure lists (``google``, ``aws``, ``cave``) are
mounted read-only as one projected volume at cloud-volume's secrets folder, never passed as
arguments or plain environment values. With ``kubernetes.gke`` set the operator is
``GKEStartPodOperator`` (the same operator plus GKE credentials).

The operator is synchronous, not deferrable: a deferrable pod operator has ignored
``execution_timeout`` and left pods running when its task was marked failed (provider bugs).
Synchronously, a timeout or failure runs the operator's clean-up and ``on_kill`` (a task
marked failed by hand) deletes the pod; ``active_deadline_seconds`` makes Kubernetes itself
stop a pod that outlives the layer's timeout.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

SECRETS_DIR = "/root/.cloudvolume/secrets"  # where cloud-volume looks for <kind>-secret.json
SECRET_KINDS = ("google", "aws", "cave")
WORKDIR = "/app"


def pod_workers(cpu: Any) -> int:
    """Worker processes for a pod with CPU request ``cpu`` (``2``, ``1.5``, ``500m``)."""
    text = str(cpu)
    value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(1, math.floor(value))


def container_resources(settings: dict[str, Any]) -> k8s.V1ResourceRequirements:
    """A layer's requests and limits (memory limit defaults to the request: no overcommit)."""
    requests = {"cpu": str(settings["cpu"]), "memory": str(settings["memory"])}
    limits = {"memory": str(settings.get("memory_limit") or settings["memory"])}
    if settings.get("cpu_limit") is not None:
        limits["cpu"] = str(settings["cpu_limit"])
    return k8s.V1ResourceRequirements(requests=requests, limits=limits)


def secret_volume(secrets: dict[str, str]) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
    """The configured secrets as one read-only projected volume at cloud-volume's folder."""
    if not secrets:
        return [], []
    unknown = sorted(set(secrets) - set(SECRET_KINDS))
    if unknown:
        raise ValueError(
            f"kubernetes.secrets has unknown kind {unknown[0]!r}: use {', '.join(SECRET_KINDS)}"
        )
    sources = [
        k8s.V1VolumeProjection(
            secret=k8s.V1SecretProjection(
                name=name,
                items=[k8s.V1KeyToPath(key=f"{kind}-secret.json", path=f"{kind}-secret.json")],
            )
        )
        for kind, name in sorted(secrets.items())
    ]
    volume = k8s.V1Volume(
        name="meshing-secrets", projected=k8s.V1ProjectedVolumeSource(sources=sources)
    )
    mount = k8s.V1VolumeMount(name="meshing-secrets", mount_path=SECRETS_DIR, read_only=True)
    return [volume], [mount]


def secret_env(secrets: dict[str, str]) -> dict[str, str]:
    """Paths (not contents) that point Google clients at the mounted key file."""
    if "google" in secrets:
        return {"GOOGLE_APPLICATION_CREDENTIALS": f"{SECRETS_DIR}/google-secret.json"}
    return {}


def graph_environment(config: Any) -> dict[str, str]:
    """What a pod needs to reach the graph beyond the mounted secrets.

    A PyChunkedGraph graph is found through ``BIGTABLE_PROJECT`` / ``BIGTABLE_INSTANCE``:
    passed on from this task's environment (the one setup opened the graph with), and its key
    file must be mounted (``kubernetes.secrets.google``), never copied into the pod spec.
    """
    if getattr(config, "backend", "embedded") != "pychunkedgraph":
        return {}
    from meshing_core.errors import MeshingError

    if "google" not in (config.kubernetes.get("secrets") or {}):
        raise MeshingError(
            f"{config.source}: a pychunkedgraph graph's pods need its service account key: "
            "set kubernetes.secrets.google to the Kubernetes secret holding google-secret.json"
        )
    from meshing_core.graph.pcg import CREDENTIAL_VARIABLES

    names = [n for n in CREDENTIAL_VARIABLES if n.startswith("BIGTABLE_")]
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise MeshingError(
            f"PyChunkedGraph backend: {', '.join(missing)} not set in the Airflow worker: export "
            "them where Airflow runs tasks (pods get them from there)"
        )
    return {n: os.environ[n] for n in names}


def pod_name(graph: str, layer: int) -> str:
    """A DNS-1123 pod name prefix (the operator adds a random suffix)."""
    base = re.sub(r"[^a-z0-9-]", "-", f"mesh-{graph}-l{layer}".lower()).strip("-")
    return base[:50] or "mesh"


def _batch_pod_class(base: type, name: str, doc: str) -> type:
    """``base`` (the plain or the GKE pod operator) whose command is built at run time from
    the mapped descriptor and the run's ticket. Made by a factory, not a mixin: Airflow checks
    a mapped operator's arguments against its operator classes' own signatures."""

    def __init__(
        self: Any,
        *,
        graph_yaml: str,
        descriptor: dict[str, Any],
        ticket: dict[str, Any],
        workers: int = 1,
        **kwargs: Any,
    ) -> None:
        base.__init__(self, **kwargs)
        self.graph_yaml = str(graph_yaml)
        self.descriptor = descriptor
        self.ticket = ticket
        self.workers = int(workers)

    def batch_arguments(self: Any) -> list[str]:
        from meshing_core.run.plan import batch_command

        command = batch_command(
            self.descriptor, self.graph_yaml, str(self.ticket["timestamp_rfc3339"])
        )
        return [*command, "--workers", str(self.workers)]

    def prepare_pod(self: Any) -> Any:
        """The batch's command and the graph backend's environment; returns the config."""
        from meshing_core.config import load_config

        config = load_config(self.graph_yaml)
        self.arguments = self.batch_arguments()
        extra = graph_environment(config)
        if extra and isinstance(self.env_vars, dict):  # kept as given until the pod is built
            self.env_vars = {**self.env_vars, **extra}
        elif extra:
            added = [k8s.V1EnvVar(name=k, value=v) for k, v in extra.items()]
            self.env_vars = [*(self.env_vars or []), *added]
        return config

    def execute(self: Any, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from meshing_airflow.outcomes import airflow_outcomes
        from meshing_core.run.lifecycle import collect_batch
        from meshing_core.run.plan import batch_label

        mode = str(self.ticket.get("mode", "kubernetes"))
        if mode != "kubernetes":
            raise AirflowFailException(f"this DAG runs kubernetes batches only, not {mode!r}")
        with airflow_outcomes(f"{batch_label(self.descriptor)}: "):
            config = self.prepare_pod()
        base.execute(self, context)  # the pod: deleted when it ends, fails or times out
        with airflow_outcomes(f"{batch_label(self.descriptor)}: "):
            return collect_batch(config, self.ticket, self.descriptor)

    cls = type(
        name,
        (base,),
        {
            "__doc__": doc,
            "__module__": __name__,
            "__qualname__": name,
            "__init__": __init__,
            "batch_arguments": batch_arguments,
            "prepare_pod": prepare_pod,
            "execute": execute,
            "template_fields": (*base.template_fields, "descriptor", "ticket"),
        },
    )
    globals()[name] = cls
    return cls


MeshBatchPodOperator = _batch_pod_class(
    KubernetesPodOperator, "MeshBatchPodOperator", "One batch of a layer as a Kubernetes pod."
)


def _gke_operator() -> type:
    if "MeshBatchGKEPodOperator" in globals():
        return globals()["MeshBatchGKEPodOperator"]
    from airflow.providers.google.cloud.operators.kubernetes_engine import GKEStartPodOperator

    return _batch_pod_class(
        GKEStartPodOperator, "MeshBatchGKEPodOperator", "One batch of a layer as a GKE pod."
    )


def pod_partial(config: Any, graph_yaml: str, layer: int, **common: Any) -> Any:
    """The mapped pod operator of one layer (``.partial``; the caller expands descriptors)."""
    settings = config.layer_settings(layer)
    kube = config.kubernetes
    secrets = dict(kube["secrets"] or {})
    volumes, mounts = secret_volume(secrets)
    extra: dict[str, Any] = {}
    operator: type = MeshBatchPodOperator
    if kube.get("gke"):
        operator = _gke_operator()
        extra.update(kube["gke"])
    if kube.get("kubernetes_conn_id"):
        extra["kubernetes_conn_id"] = kube["kubernetes_conn_id"]
    if kube.get("service_account"):
        extra["service_account_name"] = kube["service_account"]
    return operator.partial(
        graph_yaml=graph_yaml,
        workers=pod_workers(settings["cpu"]),
        namespace=str(kube["namespace"]),
        image=str(kube["image"]),
        image_pull_policy=str(kube["image_pull_policy"]),
        name=pod_name(config.name, layer),
        cmds=["python", "-m", "meshing_core"],
        container_resources=container_resources(settings),
        volumes=volumes,
        volume_mounts=mounts,
        env_vars=secret_env(secrets),
        labels={"app": "meshing", "graph": pod_name(config.name, 0)[:63], "layer": str(layer)},
        startup_timeout_seconds=int(kube["startup_timeout_s"]),
        startup_check_interval_seconds=1,
        active_deadline_seconds=int(float(settings["timeout_s"])),
        on_finish_action="delete_pod",
        get_logs=True,
        do_xcom_push=False,
        deferrable=False,
        **extra,
        **common,
    )

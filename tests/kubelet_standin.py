"""A loopback Kubernetes API (kmock's emulator) and a kubelet stand-in that runs pods locally.

``KubeCluster`` runs both in one thread with its own event loop, listening on 127.0.0.1 only.
The API server is ``kmock.KubernetesEmulator`` plus what a real API server does and the
emulator does not: it defaults a created pod (uid, creationTimestamp, ``status.phase: Pending``),
honours ``labelSelector`` on lists (KubernetesPodOperator finds its pod by labels) and serves
``pods/<name>/log`` from the kubelet (``follow``, ``timestamps``, ``sinceSeconds``).

The kubelet stand-in notices new pods, runs the first container's command and args as a local
process (``python`` becomes this interpreter, the working directory is the given repository),
and reports through the API, as a kubelet does: ``Pending`` -> ``Running`` (container state
``running``) -> ``Succeeded``/``Failed`` with ``state.terminated.exitCode``. A deleted pod's
process is killed. ``behaviour(pod)`` picks, per pod: ``"run"`` (default), ``"hang"`` (Running
forever, nothing started) or an int (terminate with that exit code, nothing started).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock

PODS = kmock.resource("", "v1", "pods")
Behaviour = Callable[[dict[str, Any]], "str | int"]


def _rfc3339(t: float | None = None, *, nanos: bool = False) -> str:
    moment = dt.datetime.fromtimestamp(time.time() if t is None else t, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if nanos else "%Y-%m-%dT%H:%M:%SZ")


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``)."""
    for term in (t.strip() for t in selector.split(",")):
        if not term:
            continue
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class PodRecord:
    """What the kubelet stand-in did with one pod."""

    namespace: str
    name: str
    labels: dict[str, str]
    argv: list[str]
    behaviour: str | int
    phases: list[str] = field(default_factory=list)
    exit_code: int | None = None
    killed: bool = False
    deleted: bool = False
    done: bool = False
    log_reads: int = 0
    lines: list[tuple[float, bytes]] = field(default_factory=list)
    proc: Any = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "labels": dict(self.labels),
            "argv": list(self.argv),
            "behaviour": self.behaviour,
            "phases": list(self.phases),
            "exit_code": self.exit_code,
            "killed": self.killed,
            "deleted": self.deleted,
            "log_reads": self.log_reads,
            "log": b"".join(line for _, line in self.lines).decode(errors="replace"),
        }


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with pod defaulting, label selectors and the ``log`` subresource."""

    kubelet: Kubelet | None = None

    async def _handle(self, request: kmock.Request) -> Any:
        created = (
            request.resource == PODS
            and request.action == kmock.action.CREATE
            and isinstance(request.data, dict)
        )
        if created:  # what the real API server fills in before storing a pod
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace or "default")
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _rfc3339())
            meta.setdefault("resourceVersion", "1")
            request.data.setdefault("status", {"phase": "Pending", "qosClass": "Burstable"})
        response = await super()._handle(request)
        deleted = request.resource == PODS and request.action == kmock.action.DELETE
        if (created or deleted) and self.kubelet is not None:
            self.kubelet.wake()
        return response

    async def _serve_list(self, request: kmock.Request) -> Any:
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector and isinstance(result, dict):
            result["items"] = [
                item
                for item in result["items"]
                if selector_matches(selector, (item.get("metadata") or {}).get("labels") or {})
            ]
        return result

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        if request.resource == PODS and request.subresource == "log":
            await super()._serve_fetch(request)  # 404 for an unknown or deleted pod
            assert self.kubelet is not None
            return self.kubelet.log_stream(request)
        return await super()._serve_fetch(request)


class Kubelet:
    """Runs the emulator's pods as local processes and reports their status through the API."""

    def __init__(self, api: ApiServer, workdir: Path, behaviour: Behaviour | None) -> None:
        self.api = api
        self.workdir = Path(workdir)
        self.behaviour = behaviour or (lambda pod: "run")
        self.records: dict[tuple[str, str], PodRecord] = {}
        self.errors: list[str] = []
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            self._sync()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.2)

    def _sync(self) -> None:
        for (resource, namespace, name), obj in list(self.api.objects.items()):
            if resource != PODS:
                continue
            key = (namespace or "default", name)
            record = self.records.get(key)
            if record is None and not obj.deleted:
                pod = copy.deepcopy(obj.raw)
                task = asyncio.create_task(self._run_pod(key, pod))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                self.records[key] = self._record(key, pod)
            elif record is not None and obj.deleted and not record.deleted:
                record.deleted = True
                self._kill(record)

    def _record(self, key: tuple[str, str], pod: dict[str, Any]) -> PodRecord:
        container = pod["spec"]["containers"][0]
        command = list(container.get("command") or []) + list(container.get("args") or [])
        argv = [sys.executable if i == 0 and c == "python" else c for i, c in enumerate(command)]
        try:
            behaviour = self.behaviour(pod)
        except Exception as exc:  # a broken test rule must show, not hang the pod
            self.errors.append(f"behaviour({key}): {exc!r}")
            behaviour = 99
        labels = dict((pod.get("metadata") or {}).get("labels") or {})
        return PodRecord(key[0], key[1], labels, argv, behaviour)

    async def _status(self, record: PodRecord, status: dict[str, Any]) -> None:
        path = f"/api/v1/namespaces/{record.namespace}/pods/{record.name}/status"
        try:
            async with self.api.patch(path, json={"status": status}) as response:
                if response.status == 200:
                    record.phases.append(status["phase"])
                elif response.status != 404:  # 404: deleted meanwhile
                    self.errors.append(f"PATCH {path}: {response.status} {await response.text()}")
        except Exception as exc:
            self.errors.append(f"PATCH {path}: {exc!r}")

    async def _run_pod(self, key: tuple[str, str], pod: dict[str, Any]) -> None:
        record = self.records[key]
        container = pod["spec"]["containers"][0]
        name = container.get("name", "base")
        image = container.get("image", "")
        started = _rfc3339()
        if record.behaviour == "run":
            env = dict(os.environ)
            env.update({e["name"]: str(e.get("value") or "") for e in container.get("env") or []})
            try:
                record.proc = await asyncio.create_subprocess_exec(
                    *record.argv,
                    cwd=self.workdir,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                record.lines.append((time.time(), f"cannot start: {exc}\n".encode()))
                record.behaviour = 128
        scheduled = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": started}]
        await self._status(
            record,
            {
                "phase": "Running",
                "conditions": scheduled,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "startTime": started,
                "containerStatuses": [
                    {
                        "name": name,
                        "image": image,
                        "imageID": image,
                        "containerID": f"local://{record.name}",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        )
        if record.behaviour == "hang":
            return  # Running until deleted
        if record.proc is not None:
            assert record.proc.stdout is not None
            async for line in record.proc.stdout:
                record.lines.append((time.time(), line))
            code = await record.proc.wait()
        else:
            code = int(record.behaviour)
        record.exit_code = code
        finished = _rfc3339()
        await self._status(
            record,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [
                    {
                        "name": name,
                        "image": image,
                        "imageID": image,
                        "containerID": f"local://{record.name}",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": "Completed" if code == 0 else "Error",
                                "startedAt": started,
                                "finishedAt": finished,
                                "containerID": f"local://{record.name}",
                            }
                        },
                    }
                ],
            },
        )
        record.done = True

    def _kill(self, record: PodRecord) -> None:
        proc = record.proc
        if proc is not None and proc.returncode is None:
            record.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)

    async def log_stream(self, request: kmock.Request) -> AsyncIterator[bytes]:
        record = self.records.get((request.namespace or "default", request.name or ""))
        params = {k: str(v).lower() for k, v in request.params.items()}
        follow = params.get("follow") == "true"
        timestamps = params.get("timestamps") == "true"
        since = params.get("sinceseconds") or request.params.get("sinceSeconds")
        cutoff = time.time() - float(since) if since else None
        if record is not None:
            record.log_reads += 1
        yield b""  # send the headers now, as the kubelet does
        index = 0
        while record is not None:
            while index < len(record.lines):
                moment, line = record.lines[index]
                index += 1
                if cutoff is None or moment >= cutoff:
                    stamp = _rfc3339(moment, nanos=True).encode() + b" " if timestamps else b""
                    yield stamp + line
            if record.done or record.deleted or not follow:
                break
            await asyncio.sleep(0.1)

    async def shutdown(self) -> None:
        for record in self.records.values():
            self._kill(record)
        for record in self.records.values():
            if record.proc is not None and record.proc.returncode is None:
                try:
                    await asyncio.wait_for(record.proc.wait(), 10)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(record.proc.pid, signal.SIGKILL)
                    await record.proc.wait()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class KubeCluster:
    """The API server and the kubelet stand-in in a thread; a context manager.

    ``url`` is the API's address; ``kubeconfig(path)`` writes a kubeconfig pointing at it;
    ``snapshot()`` returns the stored pods (with their history's phases), the kubelet's
    records and any server-side errors.
    """

    def __init__(self, workdir: Path, behaviour: Behaviour | None = None) -> None:
        self.workdir = Path(workdir)
        self.behaviour = behaviour
        self.url = ""
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name="kmock", daemon=True)

    def __enter__(self) -> KubeCluster:
        self._thread.start()
        if not self._ready.wait(20) or self._failure is not None:
            raise RuntimeError(f"kmock did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._thread.is_alive():
            raise RuntimeError("kmock thread did not stop within 30 s")

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # shown by __enter__ or snapshot
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        api = ApiServer()
        api.resources["v1/pods"] = {"kind": "Pod", "singular": "pod", "namespaced": True}
        api.resources["v1/events"] = {"kind": "Event", "singular": "event", "namespaced": True}
        async with api, kmock.Server(api, host="127.0.0.1") as server:
            self.api = api
            self.kubelet = Kubelet(api, self.workdir, self.behaviour)
            api.kubelet = self.kubelet
            runner = asyncio.create_task(self.kubelet.run())
            self.url = f"http://127.0.0.1:{server.port}"
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
                await self.kubelet.shutdown()

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "kmock", "user": {"token": "kmock"}}],
            "contexts": [
                {
                    "name": "kmock",
                    "context": {"cluster": "kmock", "user": "kmock", "namespace": namespace},
                }
            ],
            "current-context": "kmock",
        }
        Path(path).write_text(json.dumps(config))  # JSON is YAML
        return Path(path)

    async def _snapshot(self) -> dict[str, Any]:
        pods = {}
        for (resource, namespace, name), obj in self.api.objects.items():
            if resource != PODS:
                continue
            versions = [v for v in obj.history if v is not None]
            phases = [((v.raw.get("status") or {}).get("phase")) for v in versions]
            pods[name] = {
                "namespace": namespace,
                "deleted": obj.deleted,
                "phases": [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]],
                "labels": dict((obj.last.raw.get("metadata") or {}).get("labels") or {}),
            }
        return {
            "pods": pods,
            "kubelet": {r.name: r.summary() for r in self.kubelet.records.values()},
            "errors": [repr(e) for e in self.api.errors] + list(self.kubelet.errors),
            "requests": [
                f"{r.method.value if r.method else '?'} {r.url.path_qs}" for r in list(self.api)
            ],
        }

    def snapshot(self) -> dict[str, Any]:
        if self._loop is None or self._failure is not None:
            raise RuntimeError(f"kmock is not running: {self._failure!r}")
        return asyncio.run_coroutine_threadsafe(self._snapshot(), self._loop).result(10)

"""Operating a run from the Airflow UI, in a real browser (Debian chromium driven by Playwright).

One ``make airflow`` server for the module (API server, scheduler, dag-processor, triggerer on
127.0.0.1) whose example DAG tells run failures by e-mail (a local ``aiosmtpd`` server) and by
webhook (a local HTTP receiver). A user logs in, triggers the example from the trigger form with
a chosen timestamp, follows it to success and reads the "Layer progress" tab, whose numbers must
equal ``python -m meshing_core status`` of the same run; a run with a failing chunk shows that
chunk failed in the tab, its link opens the batch's log, and each channel gets exactly one
message naming the chunk. The plugin's endpoints refuse unauthenticated requests.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import requests
import yaml
from cli_support import REPO, run_cli
from ui_support import logged_in_page, progress_tab, run_url

from tools.airflow_env import free_port
from tools.airflow_serve import Server, standalone

DAG_ID = "mesh_example"
FORM_DATE, FORM_TIME = "2021/03/02", "12:00"
FORM_TIMESTAMP = "2021-03-02T12:00:00Z"  # what the form's date and time mean (UTC)
FAILING_TIMESTAMP = "2021-03-04T00:00:00Z"  # the fault helpers of test_airflow_server use it
SCREENSHOT = REPO / "docs" / "layer-progress.png"
FIELDS = ("chunks_total", "chunks_done", "chunks_empty", "chunks_failed", "chunks_pending",
          "nodes", "fragments", "bytes")  # fmt: skip


@dataclass
class Inbox:
    """What the local SMTP server and HTTP receiver got."""

    mails: list[str] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Served:
    server: Server
    graph_yaml: Path
    inbox: Inbox


def _smtp_server(inbox: Inbox, port: int) -> Any:
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
            inbox.mails.append(envelope.content.decode("utf-8", "replace"))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller


def _http_receiver(inbox: Inbox, port: int) -> ThreadingHTTPServer:
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            inbox.hooks.append({"path": self.path, "body": json.loads(body or b"{}")})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def served(example_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The server, its example copy (run failures told by e-mail and webhook) and the inbox."""
    root = tmp_path_factory.mktemp("ui")
    dataset = root / "example"
    shutil.copytree(example_dir, dataset)
    graph_yaml = dataset / "graph.yaml"
    data = yaml.safe_load(graph_yaml.read_text())
    data.setdefault("layers", {})["3"] = {"retries": 0}
    data["notifications"] = {
        "run_failure": [
            {"type": "email", "to": ["ops@example.org"], "from_email": "meshing@example.org",
             "conn_id": "smtp_meshing"},
            {"type": "webhook", "conn_id": "meshing_hook", "endpoint": "/meshing"},
        ]
    }  # fmt: skip
    graph_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    configs = root / "configs"
    configs.mkdir()
    (configs / "example.yaml").write_text("graph: ../example/graph.yaml\n")
    inbox = Inbox()
    smtp_port, hook_port = free_port(), free_port()
    smtp = _smtp_server(inbox, smtp_port)
    hook = _http_receiver(inbox, hook_port)
    connections = {
        "AIRFLOW_CONN_SMTP_MESHING": f"smtp://127.0.0.1:{smtp_port}?disable_ssl=true&disable_tls=true",
        "AIRFLOW_CONN_MESHING_HOOK": f"http://127.0.0.1:{hook_port}",
    }
    try:
        with standalone(root / "home", configs, free_port(), extra_env=connections) as server:
            server.wait_for_dag(DAG_ID, timeout=120)
            yield Served(server, graph_yaml, inbox)
    finally:
        smtp.stop()
        hook.shutdown()


@pytest.fixture()
def page(browser: Any, served: Served) -> Iterator[Any]:
    tab = logged_in_page(browser, served.server)
    yield tab
    tab.context.close()


def _tab_numbers(frame: Any, layers: list[int]) -> dict[int, dict[str, str]]:
    return {
        layer: {
            f: frame.locator(f"td[data-layer='{layer}'][data-field='{f}']").get_attribute(
                "data-value"
            )
            for f in FIELDS
        }
        for layer in layers
    }


def _status(graph_yaml: Path, timestamp: str) -> dict[str, Any]:
    out = run_cli("status", "--graph", str(graph_yaml), "--timestamp", timestamp, "--json")
    return json.loads(out.stdout)


def test_ui_endpoints_refuse_unauthenticated_requests(served: Served) -> None:
    server = served.server
    for path in (f"/meshing/runs/{DAG_ID}/none", f"/meshing/runs/{DAG_ID}/none/data"):
        anonymous = requests.get(server.url + path, timeout=30)
        assert anonymous.status_code in (401, 403), (path, anonymous.status_code)
        forged = requests.get(server.url + path, cookies={"_token": "forged"}, timeout=30)
        assert forged.status_code in (401, 403), (path, forged.status_code)
    allowed = requests.get(
        f"{server.url}/meshing/runs/{DAG_ID}/none/data",
        headers={"Authorization": f"Bearer {server.token()}"},
        timeout=30,
    )
    assert allowed.status_code == 404 and "no run 'none'" in allowed.json()["detail"]


def test_ui_trigger_from_the_form_then_the_tab_shows_what_status_says(
    served: Served, page: Any
) -> None:
    server = served.server
    page.goto(f"{server.url}/dags/{DAG_ID}")
    page.get_by_test_id("trigger-dag-button").click()
    row = page.locator("div").filter(has_text="Meshing timestamp")
    row.get_by_test_id("datetime-input").last.click()
    page.get_by_placeholder("YYYY/MM/DD").fill(FORM_DATE)
    page.get_by_placeholder("HH:mm").fill(FORM_TIME)
    page.keyboard.press("Escape")
    page.get_by_test_id("trigger-dag-submit").click()
    deadline = time.monotonic() + 60
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not runs:
        runs = server.get(f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
        time.sleep(0.5)
    assert len(runs) == 1, runs
    run_id = runs[0]["dag_run_id"]
    assert runs[0]["conf"]["timestamp"].startswith("2021-03-02T12:00:00")
    assert server.wait_for_run(DAG_ID, run_id, timeout=300)["state"] == "success"

    frame = progress_tab(page, server, DAG_ID, run_id)
    status = _status(served.graph_yaml, FORM_TIMESTAMP)
    layers = [s["layer"] for s in status["layers"]]
    shown = _tab_numbers(frame, layers)
    expected = {
        s["layer"]: {f: "" if s[f] is None else str(s[f]) for f in FIELDS} for s in status["layers"]
    }
    assert shown == expected
    assert all(s["chunks_done"] == s["chunks_total"] > 0 for s in status["layers"])
    assert frame.locator("[data-field=state]").inner_text() == "run success"
    assert frame.locator("canvas[data-layer='2']").count() == 1
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    # readable grid: each mapped batch is labelled with its layer, batch and chunk range
    page.goto(run_url(server, DAG_ID, run_id, "/tasks/layer_2.batch/mapped"))
    page.get_by_text("L2 b0 chunks 0-").first.wait_for()
    time.sleep(5)  # time for a (wrong) success notification to arrive: none is configured
    assert served.inbox.mails == [] and served.inbox.hooks == []


def _mail_text(raw: str) -> str:
    """Subject and decoded text parts of a received e-mail."""
    import email

    message = email.message_from_string(raw)
    parts = [message.get("Subject", "")]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_payload(decode=True).decode("utf-8", "replace"))
    return "\n".join(parts)


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_ui_a_failed_chunk_shows_in_the_tab_links_to_its_log_and_is_told_once(
    served: Served, page: Any
) -> None:
    from test_airflow_server import _corrupt_one_child_shard

    server, graph_yaml = served.server, served.graph_yaml
    run_cli("run", "--graph", str(graph_yaml), "--timestamp", FAILING_TIMESTAMP,
            "--max-layer", "2", "-q")  # fmt: skip
    _, _, parent, parent_index = _corrupt_one_child_shard(graph_yaml)
    data = yaml.safe_load(graph_yaml.read_text())
    data["batches"]["chunks_per_batch"] = 1  # layer 3: one mapped batch per chunk
    graph_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    response = server.api(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        {"logical_date": None, "conf": {"timestamp": FAILING_TIMESTAMP, "batch_size": 1}},
    )
    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    assert server.wait_for_run(DAG_ID, run_id, timeout=300)["state"] == "failed"

    frame = progress_tab(page, server, DAG_ID, run_id)
    key = "_".join(map(str, parent))
    item = frame.locator(f"li[data-layer='3'][data-chunk='{key}']")
    assert "failed" in item.inner_text()
    assert (
        frame.locator("td[data-layer='3'][data-field='chunks_failed']").get_attribute("data-value")
        == "1"
    )
    item.get_by_role("link").click()
    page.wait_for_url(lambda url: "/tasks/layer_3.batch/mapped/" in url)
    assert unquote(page.url).endswith(f"/tasks/layer_3.batch/mapped/{parent_index}")
    page.get_by_text(f"layer-3 chunk {parent}").first.wait_for()  # the batch's log

    chunk = "[" + ", ".join(map(str, parent)) + "]"
    inbox = served.inbox
    _wait_for(lambda: inbox.mails and inbox.hooks, 120, "the run failure's e-mail and webhook")
    time.sleep(8)  # a second message per channel would come now
    assert len(inbox.mails) == 1 and len(inbox.hooks) == 1, (inbox.mails, inbox.hooks)
    mail, hook = _mail_text(inbox.mails[0]), inbox.hooks[0]
    assert "meshing run failed" in mail and run_id in mail and chunk in mail
    assert hook["path"] == "/meshing" and hook["body"]["event"] == "run_failure"
    assert hook["body"]["run_id"] == run_id and chunk in hook["body"]["text"]
    assert hook["body"]["failed"]["3"]["chunks"] == [parent]
    assert parent_index in hook["body"]["failed"]["3"]["batches"]
    assert hook["body"]["link"].endswith(f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")

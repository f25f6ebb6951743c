"""neuroglancer in a real browser (Debian chromium, WebGL2 on SwiftShader) against the server.

The URL the server prints is opened as it is; a double-click on the voxel under the centre of the
2D panel selects the object there: the selected segment must become that object's root, found
through the server's root lookup, and its mesh must come through the manifest and ranged (206)
reads of the shard files. The screenshot is the README's.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from cloudvolume import CloudVolume
from ui_support import WEBGL_ARGS, launch_chromium

from meshing_core.config import load_config
from meshing_core.graph import open_graph

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "neuroglancer.png"
TABLE = "example"
WAIT_S = 90.0


def printed_url(log: Path) -> str:
    """The neuroglancer URL from the server's start-up lines (bounded wait)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"neuroglancer: (http\S+)", log.read_text())
        if match:
            return match.group(1)
        time.sleep(0.2)
    raise AssertionError(f"no viewer URL printed: {log.read_text()}")


def object_at(folder: Path, voxel: list[int], timestamp: float) -> int:
    config = load_config(folder)
    sv = int(np.asarray(CloudVolume(config.watershed, progress=False)[tuple(voxel)]).ravel()[0])
    assert sv != 0, "the printed URL's centre must lie on an object"
    graph = open_graph(config)
    try:
        l2 = graph.l2_ids(np.array([sv], dtype=np.uint64), timestamp)
        return int(graph.roots(l2, timestamp)[0])
    finally:
        graph.close()


def wait_for(page, predicate, what: str):  # noqa: ANN001
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        page.wait_for_timeout(250)
    raise AssertionError(f"timed out after {WAIT_S:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def served_with_log(meshed_example: Path, tmp_path_factory: pytest.TempPathFactory):
    from tools.graphene_server import graphene_server

    log = tmp_path_factory.mktemp("ng") / "serve.log"
    with graphene_server(meshed_example, log=log) as base:
        yield base, log


def test_neuroglancer_selects_and_meshes_an_object(served_with_log, meshed_example: Path):
    from conftest import SERVED_AT_OFFSET
    from playwright.sync_api import sync_playwright

    from meshing_core.datasets.example import SPLIT_AT

    base, log = served_with_log
    url = printed_url(log)
    assert url.startswith(f"{base}/v/{TABLE}/#!")
    state = json.loads(unquote(url.split("#!", 1)[1]))
    assert state["layers"][0]["source"] == f"graphene://{base}/segmentation/table/{TABLE}"
    voxel = [int(np.floor(p)) for p in state["position"]]
    root = object_at(meshed_example, voxel, SPLIT_AT + SERVED_AT_OFFSET)

    seen: list[tuple[int, str, str, str | None]] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, *WEBGL_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.on(
                "response",
                lambda r: seen.append(
                    (r.status, r.request.method, r.url, r.request.headers.get("range"))
                ),
            )
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("() => window.viewer !== undefined", timeout=WAIT_S * 1000)
            wait_for(page, lambda: any("/segmentation/table/" in u for _, _, u, _ in seen), "info")
            panel = page.locator(".neuroglancer-rendered-data-panel").first
            wait_for(page, lambda: panel.bounding_box(), "the 2D panel")
            box = panel.bounding_box()
            page.wait_for_timeout(1500)  # the slice's chunks
            page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

            def selected() -> list[str]:
                raw = page.evaluate("() => JSON.stringify(window.viewer.state.toJSON())")
                return json.loads(raw)["layers"][0].get("segments", [])

            # the supervoxel first, then its root from the server's lookup
            wait_for(page, lambda: selected() == [str(root)], f"segment {root} selected")
            manifest = f"/meshing/api/v1/table/{TABLE}/manifest/{root}:0"
            wait_for(page, lambda: any(manifest in u for _, _, u, _ in seen), "the manifest")
            shards = f"/data/{TABLE}/graphene_meshes/initial/"
            wait_for(page, lambda: any(shards in u for _, _, u, _ in seen), "a fragment read")
            page.wait_for_timeout(3000)  # let the mesh draw for the screenshot
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()

    lookups = [s for s, _, u, _ in seen if "/root" in u and "/node/" in u]
    assert lookups and set(lookups) == {200}
    assert [s for s, _, u, _ in seen if manifest in u][0] == 200
    fragments = [(s, r) for s, _, u, r in seen if shards in u]
    assert fragments and all(s == 206 and r and r.startswith("bytes=") for s, r in fragments)
    assert not [s for s, _, u, _ in seen if s >= 400 and base in u]
    assert not errors, errors

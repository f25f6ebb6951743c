"""A real browser for the UI tests: Debian chromium driven by Playwright, logged in by the form."""

from __future__ import annotations

import shutil
from typing import Any
from urllib.parse import quote

from tools.airflow_serve import Server

# WebGL2 without a GPU (neuroglancer): ANGLE on SwiftShader, Chromium's software renderer
WEBGL_ARGS = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist")


def launch_chromium(playwright: Any, *args: str) -> Any:
    chromium = shutil.which("chromium")
    assert chromium, (
        "Debian chromium is missing: `make test` installs it (apt-get install chromium)"
    )
    return playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", *args])


def logged_in_page(browser: Any, server: Server) -> Any:
    """A new tab logged in through the login form, in UTC (the trigger form's zone)."""
    context = browser.new_context(timezone_id="UTC", viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server.url + "/auth/login")
    page.get_by_label("Username").fill(server.user)
    page.get_by_label("Password").fill(server.password())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    return page


def run_url(server: Server, dag_id: str, run_id: str, rest: str = "") -> str:
    return f"{server.url}/dags/{dag_id}/runs/{quote(run_id, safe='')}{rest}"


def progress_tab(page: Any, server: Server, dag_id: str, run_id: str) -> Any:
    """Open the run's Layer progress tab; the frame once its data has loaded."""
    page.goto(run_url(server, dag_id, run_id))
    page.get_by_text("Layer progress", exact=True).click()  # the tab on the run page
    frame = page.frame_locator('iframe[title="Layer progress"]')
    frame.locator("body[data-loaded=true]").wait_for()
    return frame

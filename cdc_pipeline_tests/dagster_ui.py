"""Drives a real Dagster UI: `dagster dev` (webserver and daemon) in a subprocess, and headless Chromium.

Generic on purpose: the code location (a module or a workspace file), DAGSTER_HOME and the environment
are parameters, so the same driver serves any code location this project ships.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from cdc_pipeline_tests.polling import wait_until

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent
REPO_INSTANCE_YAML = REPO_ROOT / "dagster.yaml"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Every process `dagster dev` starts inherits this variable: after shutdown, a process that still carries
# this session's value is an orphan, however it was started (forked runs, code servers, ...).
_SESSION_MARKER = "CDC_DAGSTER_UI_SESSION"


class DagsterUiError(RuntimeError):
    """`dagster dev` did not come up, exited early, or answered with an error."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare_dagster_home(dagster_home: Path, instance_yaml: Path | None = REPO_INSTANCE_YAML) -> Path:
    """Create DAGSTER_HOME with the instance settings (run-queue tag limits) that the project's runs rely on."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    if instance_yaml is not None:
        shutil.copyfile(instance_yaml, dagster_home / "dagster.yaml")
    return dagster_home


@dataclass
class DagsterUi:
    """A running `dagster dev`: its URL, a GraphQL client, and its log for error messages."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    marker: str
    # After the block: processes that outlived dagster dev's own shutdown and were sent SIGTERM (code
    # servers that missed their stop request), those that needed SIGKILL, and any still alive (none
    # unless the kernel could not end them). The last two are empty when the shutdown went cleanly.
    terminated_at_shutdown: list[str] = field(default_factory=list)
    killed_at_shutdown: list[str] = field(default_factory=list)
    alive_after_shutdown: list[str] = field(default_factory=list)

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:] if self.log_path.exists() else ""

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        """POST a query to the webserver's GraphQL endpoint; return `data`, failing on GraphQL errors."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise DagsterUiError(f"GraphQL errors: {payload['errors']}")
        return dict(payload["data"])

    def answers(self) -> bool:
        """True once the webserver serves requests (its /server_info endpoint answers 200)."""
        if self.process.poll() is not None:
            raise DagsterUiError(f"dagster dev exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def code_locations_loaded(self) -> bool:
        """True once every code location has loaded; raises with the error if one failed to load."""
        data = self.graphql(
            """
            query {
              workspaceOrError {
                __typename
                ... on Workspace {
                  locationEntries {
                    name
                    loadStatus
                    locationOrLoadError { __typename ... on PythonError { message } }
                  }
                }
              }
            }
            """
        )
        workspace = data["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            return False
        entries = workspace["locationEntries"]
        for entry in entries:
            error = entry["locationOrLoadError"]
            if error is not None and error["__typename"] == "PythonError":
                raise DagsterUiError(f"code location {entry['name']} failed to load: {error['message']}")
        return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


@contextmanager
def dagster_dev(
    *,
    dagster_home: Path,
    env: Mapping[str, str],
    log_path: Path,
    module: str | None = None,
    workspace: Path | None = None,
    working_directory: Path | None = None,
    startup_timeout: float = 180,
    shutdown_timeout: float = 60,
    after_stop: Callable[[], None] | None = None,
) -> Iterator[DagsterUi]:
    """Run `dagster dev` for one code location (a module, or a workspace file) until the block ends.

    `dagster_home` must already hold the instance's dagster.yaml (see `prepare_dagster_home`). Yields once
    the webserver answers and every code location has loaded. On exit the process group is shut down:
    SIGTERM to `dagster dev` first (which stops its webserver, daemon and code servers in order), then
    SIGTERM and at last SIGKILL to whatever of this session outlives it; see the `*_at_shutdown` lists.
    `after_stop` runs once dagster dev has exited, before the look for leftovers: it stops what the code
    location started on purpose to outlive a process (the embedded default's database servers).
    """
    if (module is None) == (workspace is None):
        raise ValueError("give exactly one of module and workspace")
    target = ["-m", module] if module is not None else ["-w", str(workspace)]
    port = free_port()
    marker = uuid.uuid4().hex
    dagster = Path(sys.executable).parent / "dagster"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(dagster), "dev", *target, "--host", "127.0.0.1", "--port", str(port)],
            # The instance's directory by default: dagster dev warns about a dagster.yaml in its working
            # directory that is not DAGSTER_HOME's (the repo root has one).
            cwd=working_directory or dagster_home,
            env={**env, "DAGSTER_HOME": str(dagster_home), _SESSION_MARKER: marker},
            stdout=log,
            stderr=subprocess.STDOUT,
            # A process group of its own: the shutdown reaches every process it started, and nothing else.
            start_new_session=True,
        )
    ui = DagsterUi(f"http://127.0.0.1:{port}", process, log_path, marker)
    try:
        wait_until(ui.answers, startup_timeout, f"dagster dev to answer on port {port}")
        wait_until(ui.code_locations_loaded, startup_timeout, "the code location to load")
        # On a fresh instance served from 127.0.0.1 the UI opens a "Join the Dagster community" dialog a
        # second after the first page loads, over whatever is being clicked; this is the UI's own "Skip".
        ui.graphql("mutation { setNuxSeen }")
        yield ui
    finally:
        _shut_down(ui, shutdown_timeout, after_stop)


def _session_processes(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of live processes whose environment carries this session's marker."""
    needle = f"{_SESSION_MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or a zombie whose environment can no longer be read
            continue
        found.append((int(entry.name), command))
    return found


def _shut_down(ui: DagsterUi, timeout: float, after_stop: Callable[[], None] | None) -> None:
    """Stop `dagster dev` and everything it started, gracefully first; record what needed more."""
    process = ui.process
    if process.poll() is None:
        # dagster dev maps SIGTERM to its Ctrl-C path: it tells the webserver and the daemon to stop over
        # their shutdown pipes, waits for them, and asks its code server to shut down.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            ui.killed_at_shutdown.append(f"{process.pid} dagster dev")
            process.kill()
            process.wait()
    if after_stop is not None:
        after_stop()
    if not _all_exited(ui.marker, 10):
        # The code server is only asked to stop (over gRPC) and otherwise waits for its heartbeat to time
        # out (45 s): a request that got lost on a busy machine leaves it, its gRPC child and their
        # multiprocessing helper behind. SIGTERM is their own graceful path.
        ui.terminated_at_shutdown = [f"{pid} {command}" for pid, command in _session_processes(ui.marker)]
        _signal_session(process.pid, ui.marker, signal.SIGTERM)
        if not _all_exited(ui.marker, 20):
            ui.killed_at_shutdown += [f"{pid} {command}" for pid, command in _session_processes(ui.marker)]
            _signal_session(process.pid, ui.marker, signal.SIGKILL)
            _all_exited(ui.marker, 10)
    ui.alive_after_shutdown = [f"{pid} {command}" for pid, command in _session_processes(ui.marker)]


def _all_exited(marker: str, timeout: float) -> bool:
    try:
        wait_until(lambda: not _session_processes(marker), timeout, "the processes of dagster dev to exit")
    except TimeoutError:
        return False
    return True


def _signal_session(group: int, marker: str, signal_number: int) -> None:
    """Signal the process group dagster dev led, and any process of this session that left it."""
    try:
        os.killpg(group, signal_number)
    except ProcessLookupError:
        pass
    for pid, _ in _session_processes(marker):
        try:
            os.kill(pid, signal_number)
        except ProcessLookupError:
            pass


# -- the browser ---------------------------------------------------------------------------------


def xpath_literal(text: str) -> str:
    """`text` as an XPath string literal, whatever quotes it holds."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ', "\'", '.join(f"'{part}'" for part in text.split("'")) + ")"


@dataclass
class Browser:
    """Headless Chromium with waits by visible text (WebDriverWait, never sleeps) and screenshots."""

    driver: WebDriver
    screenshot_dir: Path
    # Generous: on 2 shared cores beside a Cassandra node and the other worker's tests, the asset graph
    # page once took more than 60 s to render its toolbar.
    timeout: float = 150

    def open(self, url: str) -> None:
        self.driver.get(url)

    def wait(self, condition: Callable[[WebDriver], T | None], what: str, timeout: float | None = None) -> T:
        """Poll `condition` until it returns something truthy (WebDriverWait); fail naming `what`."""
        try:
            result = WebDriverWait(
                self.driver, timeout or self.timeout, ignored_exceptions=(StaleElementReferenceException,)
            ).until(condition)
        except TimeoutException as error:
            # What the page showed, to see why: the screenshot and the DOM.
            self.screenshot("timeout.png")
            (self.screenshot_dir / "timeout.html").write_text(self.driver.page_source)
            raise TimeoutError(f"gave up waiting for {what} at {self.driver.current_url}") from error
        assert result is not None  # until() returns only a truthy value
        return result

    def find(self, xpath: str, what: str, timeout: float | None = None) -> WebElement:
        """The first displayed element matching `xpath`: pages keep hidden copies of some texts (shortcut
        hints, measuring spans), so the first match in the DOM is not always the one on screen."""

        def displayed(driver: WebDriver) -> WebElement | None:
            return next((element for element in driver.find_elements(By.XPATH, xpath) if element.is_displayed()), None)

        return self.wait(displayed, what, timeout)

    def find_text(self, text: str, tag: str = "*", within: str = "", timeout: float | None = None) -> WebElement:
        """A visible `tag` element whose whole visible text is `text`, inside the XPath `within`."""
        return self.find(f"{within}//{tag}[normalize-space(.)={xpath_literal(text)}]", repr(text), timeout)

    def find_text_containing(self, text: str, within: str = "", timeout: float | None = None) -> WebElement:
        """The innermost visible element whose text contains `text`."""
        contains = f"contains(normalize-space(.), {xpath_literal(text)})"
        return self.find(f"{within}//*[{contains} and not(*[{contains}])]", repr(text), timeout)

    def wait_until_gone(self, xpath: str, what: str, timeout: float | None = None) -> None:
        """Until no element matching `xpath` is displayed (a spinner, a dialog)."""

        def gone(driver: WebDriver) -> bool:
            return not any(element.is_displayed() for element in driver.find_elements(By.XPATH, xpath))

        self.wait(gone, what, timeout)

    def click(self, xpath: str, what: str, timeout: float | None = None) -> None:
        """Click the first displayed, enabled element matching `xpath`. A click that lands on something
        drawn over it (a toast, a closing popover) is tried again until the deadline."""

        def clicked(driver: WebDriver) -> bool:
            for element in driver.find_elements(By.XPATH, xpath):
                if element.is_displayed() and element.is_enabled():
                    try:
                        element.click()
                    except ElementClickInterceptedException:
                        return False
                    return True
            return False

        self.wait(clicked, what, timeout)

    def click_button(self, text: str, within: str = "", timeout: float | None = None) -> None:
        """Click the button whose visible text is `text`, once it is shown and enabled."""
        self.click(f"{within}//button[normalize-space(.)={xpath_literal(text)}]", f"button {text!r}", timeout)

    def click_text(self, text: str, within: str = "", timeout: float | None = None) -> None:
        """Click the innermost element whose text contains `text` (menu items, list rows)."""
        contains = f"contains(normalize-space(.), {xpath_literal(text)})"
        self.click(f"{within}//*[{contains} and not(*[{contains}])]", repr(text), timeout)

    def click_icon_button(self, icon: str, within: str = "", timeout: float | None = None) -> None:
        """Click a button that shows only an icon, by the icon's accessible name (Dagster's icons are
        `role="img"` with the icon's name as `aria-label`: 'settings', 'zoom_out', ...)."""
        xpath = f"{within}//button[.//*[@role='img' and @aria-label={xpath_literal(icon)}] and normalize-space(.)='']"
        self.click(xpath, f"icon button {icon!r}", timeout)

    def choose_from_menu(self, icon: str, item: str, timeout: float | None = None) -> None:
        """Open the menu behind icon button `icon` and click `item`. A page that re-renders (the asset
        graph laying itself out again, live data arriving) can close an open menu before the item is
        found: then the menu is opened again, until `timeout`."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            self.click_icon_button(icon)
            try:
                self.click_text(item, timeout=10)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def screenshot(self, name: str) -> Path:
        path = self.screenshot_dir / name
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path


@contextmanager
def headless_chromium(screenshot_dir: Path, timeout: float = 60, window_size: str = "1600,1000") -> Iterator[Browser]:
    """Debian's Chromium through its chromedriver: nothing is downloaded (Selenium Manager never runs,
    because the driver's path is given)."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            raise FileNotFoundError(f"{binary} is missing: .ci/setup installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={window_size}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield Browser(driver, screenshot_dir, timeout)
    finally:
        driver.quit()

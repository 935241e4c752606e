"""The local hub in a real browser (issue 14): a scientist logs in, lands in JupyterLab, runs the
example notebook from the home folder, scales out on dask-gateway from a new notebook and opens
the Dask dashboards, all through the hub's one public address.

Debian's Chromium (/usr/bin/chromium, installed by scripts/install-chromium.sh, which `./dev`
runs) driven by Playwright for Python: Playwright's own browser download is not reachable here.
Every wait is on a state of JupyterLab's DOM (a file listed, the kernel idle, a cell's prompt
numbered), bounded, and a failure names the step, the page, and a screenshot of every open page
(in the test's tmp_path, `screenshots/`; also the steps' screenshots when
NPD_BROWSER_SCREENSHOTS=DIR is set, which is how docs/img/hub-local-quickstart.png was taken).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from neuropixels_dask.local.hub.launcher import HubLocal, http, marked_processes

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
#: Headless, no sandbox (root in CI), and nothing that calls out: Chromium's background
#: services (updates, sync, QUIC probes) would only meet refused connections here.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
USER = "alice"
PASSWORD = "browser-test-password"
VIEWPORT = {"width": 1280, "height": 800}
#: The pod variables the chart's hub snippet computes; the kernel must have each of them.
POD_VARIABLES = ["DASK_GATEWAY__ADDRESS", "DASK_GATEWAY__PROXY_ADDRESS",
                 "DASK_GATEWAY__PUBLIC_ADDRESS", "DASK_GATEWAY__AUTH__TYPE",
                 "DASK_DISTRIBUTED__DASHBOARD__LINK", "NEUROPIXELS_DASK__CACHE__URL",
                 "NEUROPIXELS_DASK__S3__ENDPOINT_URL", "NEUROPIXELS_DASK__S3__ANON",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]

#: Step 4, in a new notebook: what the README tells a scientist to type.
SCALE_OUT = textwrap.dedent("""\
    import json, os
    import dask.array as da
    import neuropixels_dask as npd

    client = npd.get_client()                  # on the hub: a dask-gateway cluster
    cluster = client.cluster
    cluster.scale(2)
    client.wait_for_workers(2, timeout=150)
    total = da.ones((2000, 2000), chunks=500).sum().compute()
    # each worker reads the cache's session table from S3, with the pod's credentials
    rows = client.run(lambda: len(npd.open_cache().get_session_table()))
    print("CLUSTER", type(cluster).__name__, len(client.scheduler_info()["workers"]),
          int(total), sorted(rows.values()))
    print("DASHBOARD", cluster.dashboard_link)
    print("ENV", json.dumps({k: v for k, v in os.environ.items()
                             if k.startswith(("DASK_", "NEUROPIXELS_DASK__", "AWS_",
                                              "JUPYTERHUB_SERVICE_PREFIX"))}))
""")
#: A LocalCluster in the kernel: its dashboard opens through jupyter-server-proxy.
LOCAL_CLUSTER = textwrap.dedent("""\
    from distributed import LocalCluster
    local = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                         dashboard_address="127.0.0.1:0")
    print("LOCAL", local.dashboard_link)
""")
SHUTDOWN = textwrap.dedent("""\
    local.close()
    cluster.shutdown()
    print("SHUTDOWN", cluster.name)
""")


# ------------------------------------------------------------------------------------ setup


def _chromium() -> str:
    """Debian's Chromium: present, or installed by the project script (never skipped)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        subprocess.run(["bash", str(REPO / "scripts" / "install-chromium.sh")], check=True,
                       cwd=REPO, timeout=900)
    return CHROMIUM


class Steps:
    """Named, timed steps; a failing one saves a screenshot of every open page and says where,
    with the step's name, the page's address and the tail of the hub's logs."""

    def __init__(self, shots: Path, hub: HubLocal, keep: Path | None) -> None:
        self.shots = shots
        self.hub = hub
        self.keep = keep
        self.context = None
        self.times: dict[str, float] = {}
        shots.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.monotonic()
        try:
            yield
        except Exception as exc:
            saved = self._screenshots(f"failed-{name}")
            pages = [p.url for p in self.context.pages] if self.context else []
            raise AssertionError(
                f"browser step {name!r} failed after {time.monotonic() - t0:.1f} s: "
                f"{type(exc).__name__}: {exc}\n  pages: {pages}\n  screenshots: {saved}\n"
                f"  hub logs:\n{self._logs()}") from exc
        self.times[name] = time.monotonic() - t0

    def shot(self, page, name: str, **kwargs) -> Path:
        """A screenshot of the step (kept in NPD_BROWSER_SCREENSHOTS too, when set)."""
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), **kwargs)
        if self.keep is not None:
            self.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.keep / path.name)
        return path

    def _screenshots(self, prefix: str) -> list[str]:
        saved = []
        for i, page in enumerate(self.context.pages if self.context else []):
            path = self.shots / f"{prefix}-{i}.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(path), timeout=10_000)
                saved.append(str(path))
        return saved

    def _logs(self) -> str:
        if self.hub.workdir is None:
            return "  (none: the hub did not get as far as its workdir)"
        out = []
        for log in sorted((self.hub.workdir / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            out.append(f"  --- {log}\n" + "\n".join("    " + line for line in tail))
        return "\n".join(out)


# ------------------------------------------------------------------------------ JupyterLab

#: The notebook in front (JupyterLab hides the others' panels).
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"

#: The prompts of the code cells of the notebook in front, as JupyterLab shows them:
#: "[ ]:" not run, "[*]:" queued or running, "[3]:" done.
PROMPTS_JS = f"""() => [...document.querySelectorAll(
    '{NOTEBOOK} .jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent.trim())"""


def _wait_kernel_idle(page, timeout_s: float) -> None:
    """The notebook in front has its kernel, started and idle. (Its status reads "idle" before
    the kernel exists, too: a cell run then asks for a kernel in a dialog instead.)"""
    page.wait_for_function(f"""() => {{
        const name = document.querySelector('{NOTEBOOK} .jp-KernelName');
        const status = document.querySelector('{NOTEBOOK} .jp-Notebook-ExecutionIndicator');
        return name && /ipykernel/.test(name.textContent)
            && status && status.getAttribute('data-status') === 'idle';
    }}""", timeout=timeout_s * 1000)


def _dialogs(page) -> list[str]:
    """JupyterLab's modal dialogs on screen (a kernel choice, an error): none is expected."""
    return page.locator(".jp-Dialog").all_inner_texts()


def _wait_cells_done(page, timeout_s: float) -> list[str]:
    """Once nothing is queued or running any more (a cell that fails stops "run all", leaving
    later cells unnumbered), or a dialog opened: the prompts."""
    page.wait_for_function(f"""() => {{
        if (document.querySelector('.jp-Dialog')) return true;
        const p = ({PROMPTS_JS})();
        return p.length > 0 && !p.some(s => s.includes('*')) && /\\d/.test(p[0]);
    }}""", timeout=timeout_s * 1000)
    assert not _dialogs(page), _dialogs(page)
    _wait_kernel_idle(page, 30)
    return page.evaluate(PROMPTS_JS)


def _run_cell(page, index: int, code: str, timeout_s: float) -> str:
    """Type ``code`` into code cell ``index`` of the notebook in front, run it (Shift+Enter),
    wait for its prompt to be numbered; its output text, which must hold no traceback."""
    cell = page.locator(f"{NOTEBOOK} .jp-CodeCell").nth(index)
    cell.locator(".cm-content").click()
    page.keyboard.insert_text(code)  # as typed, without the editor's auto-indent
    page.keyboard.press("Shift+Enter")
    prompt = cell.locator(".jp-InputArea-prompt")
    page.wait_for_function(
        """e => /^\\[\\d+\\]:$/.test(e.textContent.trim())
                || document.querySelector('.jp-Dialog')""",
        arg=prompt.element_handle(), timeout=timeout_s * 1000)
    assert not _dialogs(page), _dialogs(page)
    text = cell.locator(".jp-OutputArea").inner_text()
    assert "Traceback" not in text, text
    return text


def _dismiss_news(page) -> None:
    """JupyterLab's own question, "notified about official Jupyter news?", if it is on screen
    (it comes a few seconds after the first start, and would cover the screenshots): No."""
    toast = page.locator(".Toastify__toast", has_text="Jupyter news")
    if toast.count():
        toast.get_by_role("button", name="No", exact=True).click()
        toast.wait_for(state="detached", timeout=10_000)


def _field(text: str, name: str) -> str:
    match = re.search(rf"^{name} (.+)$", text, re.M)
    assert match, f"no {name} line in the cell's output:\n{text}"
    return match.group(1).strip()


def _open_dashboard(context, url: str, timeout_s: float = 60):
    """Dask's status page at ``url``, live: bokeh's plots drawn (its session over websockets)."""
    page = context.new_page()
    response = page.goto(url, timeout=timeout_s * 1000)
    assert response is not None and response.status == 200, (url, response and response.status)
    page.locator("canvas").first.wait_for(timeout=timeout_s * 1000)
    assert "Dask" in page.title(), page.title()
    assert page.locator("a", has_text="Workers").count() >= 1  # the dashboard's own menu
    return page


# ------------------------------------------------------------------------------------ test


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_notebooks_in_a_real_browser(tmp_path, tiny_cache_dir):
    from playwright.sync_api import sync_playwright

    chromium = _chromium()
    keep = os.environ.get("NPD_BROWSER_SCREENSHOTS")
    t0 = time.monotonic()
    hub = HubLocal(users=[USER], password=PASSWORD, port=0, cache_dir=tiny_cache_dir,
                   workdir=tmp_path / "hub")
    steps = Steps(tmp_path / "screenshots", hub, Path(keep) if keep else None)
    try:
        with steps("hub starts"):
            hub.start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS,
                                         headless=True, timeout=60_000)
            try:
                context = steps.context = browser.new_context(viewport=VIEWPORT)
                context.set_default_timeout(60_000)
                page = context.new_page()
                _story(page, context, hub, steps)
            finally:
                browser.close()
    finally:
        hub.stop()
        steps.times["total"] = time.monotonic() - t0
        print("browser test timings (s):", {k: round(v, 1) for k, v in steps.times.items()})
    # The user's server and both kernels went with the hub.
    assert marked_processes(hub.run_id) == []


def _story(page, context, hub: HubLocal, steps: Steps) -> None:
    home = hub.home(USER)

    # 1. Log in with the hub's form.
    with steps("log in"):
        page.goto(f"{hub.url}/hub/login")
        page.fill("#username_input", USER)
        page.fill("#password_input", PASSWORD)
        page.click("#login_submit")

    # 2. The hub spawns the user's server and sends the browser on to JupyterLab, whose file
    #    browser shows the example notebooks the chart's hook seeded the home with.
    with steps("lands in JupyterLab"):
        assert hub.lab_url(USER) == f"{hub.url}/user/{USER}/lab"
        page.wait_for_url(f"{hub.lab_url(USER)}**", timeout=150_000)
        page.locator(".jp-DirListing-item", has_text="quickstart.ipynb").wait_for(
            timeout=90_000)
        assert page.locator(".jp-DirListing-item", has_text="scale_out.ipynb").count() == 1
        assert (home / ".neuropixels-hub" / "seeded").read_text().startswith(
            "neuropixels-dask==")
        steps.shot(page, "01-jupyterlab")

    # 3. quickstart.ipynb from the home folder, all cells: no error, the spectra drawn.
    with steps("quickstart runs"):
        page.locator(".jp-DirListing-item", has_text="quickstart.ipynb").dblclick()
        page.locator(f"{NOTEBOOK} .jp-CodeCell").first.wait_for()
        _wait_kernel_idle(page, 90)
        page.click("li.lm-MenuBar-item:has-text('Run')")
        page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
        prompts = _wait_cells_done(page, 240)
        outputs = page.locator(f"{NOTEBOOK} .jp-OutputArea").all_inner_texts()
        assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), (prompts, outputs)
        assert not [o for o in outputs if "Traceback" in o], outputs
        # The spectra cell's figure: a PNG that the browser decoded and laid out.
        spectra = page.locator(f"{NOTEBOOK} .jp-CodeCell").filter(has_text="plot_spectra(")
        image = spectra.locator(".jp-RenderedImage img").first
        image.wait_for(timeout=30_000)
        size = image.evaluate("img => [img.naturalWidth, img.naturalHeight, img.width]")
        assert size[0] > 200 and size[1] > 100 and size[2] > 0, size
        image.scroll_into_view_if_needed()
        _dismiss_news(page)
        steps.shot(page, "02-quickstart")
        # Saved, the notebook itself holds no error output and the figure.
        page.locator(f"{NOTEBOOK} [data-command='docmanager:save']").click()
        saved = _wait_saved(home / "quickstart.ipynb", 30)
        errors = [o for c in saved["cells"] for o in c.get("outputs", [])
                  if o["output_type"] == "error"]
        assert errors == [], errors
        figures = [c for c in saved["cells"] if "plot_spectra(" in "".join(c["source"])
                   and any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
        assert len(figures) == 1

    # 4. A new notebook: a gateway cluster, 2 workers, a computation, the data from S3.
    with steps("new notebook"):
        page.click(".jp-FileBrowser [data-command='launcher:create']")
        page.locator(".jp-LauncherCard[data-category='Notebook']").filter(visible=True).click()
        page.locator(f"{NOTEBOOK} .jp-CodeCell .cm-content").first.wait_for()
        _wait_kernel_idle(page, 90)
    with steps("gateway cluster"):
        out = _run_cell(page, 0, SCALE_OUT, 240)
        kind, workers, total, rows = _field(out, "CLUSTER").split(" ", 3)
        assert (kind, workers, total) == ("GatewayCluster", "2", str(2000 * 2000)), out
        assert json.loads(rows) == [2, 2], out  # both workers read the table from S3
        kernel_env = json.loads(_field(out, "ENV"))
        pod_env = hub.user_environment()
        assert {k: kernel_env.get(k) for k in POD_VARIABLES} == {
            k: pod_env[k] for k in POD_VARIABLES}
        assert kernel_env["JUPYTERHUB_SERVICE_PREFIX"] == f"/user/{USER}/"
        dashboard = _field(out, "DASHBOARD")
        assert dashboard.startswith("/services/dask-gateway/clusters/"), dashboard
        _dismiss_news(page)
        steps.shot(page, "03-gateway-cluster")
    with steps("local cluster"):
        local = _field(_run_cell(page, 1, LOCAL_CLUSTER, 90), "LOCAL")
        assert re.fullmatch(rf"/user/{USER}/proxy/\d+/status", local), local

    # 5. The dashboards, from the links the notebook printed: the gateway cluster's through
    #    the gateway's proxy, the LocalCluster's through jupyter-server-proxy.
    with steps("gateway dashboard"):
        gateway_dash = _open_dashboard(context, hub.url + dashboard)
        steps.shot(gateway_dash, "04-gateway-dashboard")
        gateway_dash.close()
    with steps("local dashboard"):
        local_dash = _open_dashboard(context, hub.url + local)
        steps.shot(local_dash, "05-local-dashboard")
        local_dash.close()

    with steps("shutdown"):
        page.bring_to_front()
        assert _field(_run_cell(page, 2, SHUTDOWN, 90), "SHUTDOWN") == dashboard.split("/")[-2]
        status, clusters = http("GET", f"{hub.gateway_address}/api/v1/clusters/",
                                token=hub.token(USER), auth_scheme="jupyterhub")
        assert (status, clusters) == (200, {})


def _wait_saved(path: Path, timeout_s: float) -> dict:
    """The notebook file, once it holds the run's outputs (the save may land a moment after
    JupyterLab clears its dirty mark)."""
    deadline = time.monotonic() + timeout_s
    while True:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        if all(c.get("execution_count") for c in code):
            return nb
        assert time.monotonic() < deadline, f"{path} was not saved with its outputs"
        time.sleep(0.2)

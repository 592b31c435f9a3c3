"""The app in a real browser: served on a free loopback port, loaded in headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (never a downloaded browser) and the
selenium package from requirements-dev.txt; skipped, with the reason, where they are absent.
The screenshot lands in ``$RESONATE_ARTIFACTS_DIR`` (default: ``artifacts/`` in the repository).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("headless Chromium is not installed here (Debian packages chromium and chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

START_TIMEOUT_S = 60
RENDER_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_app(tmp_path):
    port = free_port()
    env = {**os.environ, "RESONATE_APP_CONFIG": str(tmp_path / "app.json"),
           "RESONATE_SESSIONS_DIR": str(tmp_path / "sessions"), "RESONATE_CACHE_DIR": str(tmp_path / "cache")}
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def nav_labels(driver) -> list[str]:
    return [a.text.strip().splitlines()[-1] for a in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]')]


def test_restore_page_renders_in_chromium(served_app, browser):
    # A deep link as the very first request must still get the app's navigation (the link text
    # follows the icon's name), not the page run on its own.
    browser.get(f"{served_app}/about")
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(lambda d: "About Resonate" in d.page_source)
    WebDriverWait(browser, 10).until(lambda d: nav_labels(d) == ["Restore", "Batch", "Settings", "About"])

    browser.get(served_app)

    def demo_button(d):
        return [b for b in d.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Try the demo"]

    # The demo button is drawn after the uploader, so once it is there the script got past it.
    WebDriverWait(browser, RENDER_TIMEOUT_S).until(demo_button)
    uploader = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stFileUploader"]')
    assert uploader and "Drop a concert recording" in uploader[0].text
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert browser.title == "Resonate"

    artifacts = Path(os.environ.get("RESONATE_ARTIFACTS_DIR", ROOT / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "app_restore_page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def wait_for(driver, condition, what: str, timeout=RENDER_TIMEOUT_S):
    # An element found while Streamlit re-renders can be gone before it is read: look again.
    from selenium.common.exceptions import StaleElementReferenceException

    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        condition, f"waited {timeout} s for {what}")


def buttons(driver, label: str):
    return [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.strip() == label]


def exceptions(driver) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')]


def session_folder(driver, sessions: Path) -> Path:
    from urllib.parse import parse_qs, urlparse

    return sessions / parse_qs(urlparse(driver.current_url).query)["session"][0]


def test_two_minute_upload_cancel_run_results_and_reload_in_chromium(served_app, browser, tmp_path):
    import soundfile as sf
    from conftest import tone_mix

    wav = tmp_path / "two minutes.wav"
    sf.write(str(wav), tone_mix(120.0, seed=5).T * 0.5, 44100, subtype="PCM_16")
    browser.get(served_app)
    wait_for(browser, lambda d: buttons(d, "Try the demo"), "the Restore page")
    browser.find_element(By.CSS_SELECTOR, '[data-testid="stFileUploader"] input[type="file"]').send_keys(str(wav))
    wait_for(browser, lambda d: "two minutes.wav · 2:00" in d.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text,
             "the upload")
    jobs = session_folder(browser, tmp_path / "sessions") / "jobs"

    # Cancel: the job stops and leaves nothing behind.
    wait_for(browser, lambda d: [b for b in buttons(d, "Run") if b.is_enabled()], "the Run button")[0].click()
    wait_for(browser, lambda d: buttons(d, "Cancel"), "the Cancel button")[0].click()
    wait_for(browser, lambda d: "Cancelled. Nothing of that run was kept." in d.page_source, "the cancel notice")
    wait_for(browser, lambda d: [b for b in buttons(d, "Run") if b.is_enabled()], "the controls after Cancel")
    assert not exceptions(browser), exceptions(browser)
    assert not list(jobs.iterdir()) and not list(jobs.parent.rglob("*.part")), list(jobs.rglob("*"))

    # A whole run: results with the A/B player, plots and the download.
    buttons(browser, "Run")[0].click()
    wait_for(browser, lambda d: exceptions(d) or d.find_elements(By.CSS_SELECTOR, '[data-testid="stDownloadButton"]'),
             "the results", timeout=600)
    assert not exceptions(browser), exceptions(browser)
    assert browser.find_elements(By.CSS_SELECTOR, 'iframe')
    artifacts = Path(os.environ.get("RESONATE_ARTIFACTS_DIR", ROOT / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1400, 3400)
    tab = [t for t in browser.find_elements(By.CSS_SELECTOR, "[data-testid=stTab]") if t.text.strip() == "Spectrogram"]
    tab[0].click()
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .xtick")) > 0
             and d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .ytick"), "the spectrogram's axes")
    assert browser.save_screenshot(str(artifacts / "restore_2min.png"))
    for name in ("Loudness", "Stages"):                            # the tables, for a look
        [t for t in browser.find_elements(By.CSS_SELECTOR, "[data-testid=stTab]") if t.text.strip() == name][0].click()
        wait_for(browser, lambda d: any(t.is_displayed() for t in d.find_elements(By.CSS_SELECTOR, "[data-testid=stTable]")),
                 f"the {name} table")
        browser.save_screenshot(str(artifacts / f"restore_2min_{name.lower()}.png"))

    # The results survive a reload of the page (a new Streamlit session).
    browser.refresh()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stDownloadButton"]'),
             "the results after a reload")
    assert "Download master (WAV 24-bit)" in browser.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text
    assert not exceptions(browser), exceptions(browser)

"""The page at GET /, in headless Chromium: token, paste a text, Ctrl+Enter, read the bars."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.serve_helpers import BuiltRun, build_run, request, start_server

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOKEN = "browser-token-not-a-secret"

# tests/run.sh installs both where it can (root with apt); in CI a missing browser fails.
pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> BuiltRun:
    return build_run(tmp_path_factory.mktemp("page"))


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    srv = start_server(run.path, tmp_path_factory.mktemp("log") / "server.log", "--token", TOKEN)
    yield srv
    srv.stop()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # Selenium Manager cannot download a browser here
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1000,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_page_predicts_on_ctrl_enter_and_draws_the_top_k_bars(server, run, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server.url + "/")
    token = wait.until(ec.visibility_of_element_located((By.ID, "token")))  # /health said 401
    token.send_keys(TOKEN)
    area = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#fields textarea")))
    text = run.test_texts[0]
    area.send_keys(text)
    topk = browser.find_element(By.ID, "topk")
    topk.clear()
    topk.send_keys("2")
    area.click()
    area.send_keys(Keys.CONTROL, Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar")) == 2)

    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    shown = [(b.get_attribute("data-label"), float(b.get_attribute("data-score"))) for b in bars]
    want = request(server.url + "/predict", {"text": text, "top_k": 2}, token=TOKEN).body
    pred = want["predictions"][0]
    assert shown == [(s["label"], s["score"]) for s in pred["scores"]]
    chosen = browser.find_elements(By.CSS_SELECTOR, "#bars .bar.chosen")
    assert [b.get_attribute("data-label") for b in chosen] == pred["labels"]
    assert bars[0].find_element(By.CSS_SELECTOR, ".value").text.endswith("%")
    assert "error" not in browser.find_element(By.ID, "status").get_attribute("class")

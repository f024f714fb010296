"""The web console in a real browser: Debian's headless Chromium, driven through /usr/bin/chromedriver.

One console server (uvicorn, HTTPS with the gateway's certificate, as `mailgw console`
serves it) and one browser for the whole module, over the gateway home of
tests/console_home.py. Nothing is downloaded at run time. With
MAILGW_CONSOLE_SCREENSHOTS=DIR, the main pages are saved there as PNGs (docs/console-*.png).
"""

from __future__ import annotations

import csv
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.console_home import NAMES, PASSWORDS, Home, build

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = os.environ.get("MAILGW_CONSOLE_SCREENSHOTS")


def _need_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("MAILGW_REQUIRE_TOOLS") == "1":
        pytest.fail(reason + ", and MAILGW_REQUIRE_TOOLS=1 requires it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    _need_browser()
    return build(tmp_path_factory.mktemp("console-browser"))


@pytest.fixture(scope="module")
def base(home: Home) -> Iterator[str]:
    """The console served over HTTPS on a free port of 127.0.0.1, in a thread, as `mailgw console` runs it."""
    import uvicorn

    from mailgw.console.app import create_app

    app = create_app(str(home.settings))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    tls = app.state.console.settings.tls
    server = uvicorn.Server(uvicorn.Config(app, ssl_certfile=tls.cert, ssl_keyfile=tls.key, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the console did not start"
        time.sleep(0.02)
    yield f"https://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser(home: Home, base: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium; closed before the console stops (``base``), so no connection of its is left open."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1366,900", "--lang=vi", f"--ignore-certificate-errors-spki-list={_spki(home)}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _spki(home: Home) -> str:
    """The pin of the gateway's certificate key: Chromium trusts that certificate (the tests' own CA issued it,
    as an agency's would issue the gateway's), and the page is a secure context with its Secure cookies."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate((home.path / "cert.pem").read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1366, min(max(int(height), 700), 2400))
        driver.save_screenshot(str(Path(SHOTS) / f"console-{name}.png"))
        driver.set_window_size(1366, 900)


def _text(driver: Any) -> str:
    return str(driver.find_element("tag name", "body").text)


def _arrive(driver: Any, url: str) -> None:
    """Wait for the navigation a click started (a form's submission returns before the next page loads)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(lambda d: d.current_url == url and d.execute_script(
        "return document.readyState") == "complete")


def _gone(element: Any) -> Callable[[Any], bool]:
    """Whether ``element`` left the document (the next page replaced it).

    Selenium's ``staleness_of`` knows only StaleElementReferenceException; Chromium
    also reports a node of the old document as an inspector error, mid-navigation.
    """
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def check(_driver: Any) -> bool:
        try:
            element.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return True
            raise

    return check


def _submit(driver: Any, button: str) -> None:
    """Click a form's button and wait for the page it posts to replace this one."""
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element("tag name", "html")
    driver.find_element("id", button).click()
    WebDriverWait(driver, 30).until(_gone(old))
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")


def login(driver: Any, base: str, user: str) -> None:
    driver.delete_all_cookies()
    driver.get(base + "/search")
    assert "/login" in driver.current_url  # no page without login
    driver.find_element("id", "login").send_keys(user)
    driver.find_element("id", "password").send_keys(PASSWORDS[user])
    if user == "kiemtra":
        _shot(driver, "login")
    _submit(driver, "submit")
    assert driver.current_url == base + "/search", _text(driver)
    assert driver.find_element("id", "whoami").text == NAMES[user]


def test_login_search_and_an_exchange_page(browser: Any, base: str, home: Home) -> None:
    login(browser, base, "kiemtra")
    browser.find_element("id", "subject").send_keys("kế hoạch")
    _submit(browser, "search")
    assert browser.find_element("id", "count").text == "1"
    row = browser.find_element("css selector", "#results tbody tr")
    assert "Sở Nội vụ" in row.text and "Kế hoạch" in row.text and "Chấp nhận" in row.text
    browser.get(base + "/search?go=1")
    _shot(browser, "search")
    browser.get(base + "/search?go=1&subject=kế hoạch")
    browser.find_element("css selector", "#results a.xid").click()
    _arrive(browser, base + "/exchange/M-snv-stc")
    page = _text(browser)
    assert "Kế hoạch" in browser.find_element("id", "category").text  # the category by its Vietnamese name
    assert "Sở Nội vụ" in browser.find_element("id", "sender").text  # the agency by its directory name
    assert "channel:dms" in browser.find_element("id", "tags").text
    assert browser.find_element("id", "evidence").text  # the classification's evidence
    assert "Vị trí trong chuỗi băm" in page and browser.find_element("id", "seq").text.isdigit()
    assert "10/03/2025 11:00:00" in page  # 04:00 UTC is 11:00 in Hanoi
    _shot(browser, "exchange")


def test_a_scoped_auditor_cannot_see_another_agencys_exchange(browser: Any, base: str, home: Home) -> None:
    login(browser, base, "kiemtra.snv")
    browser.get(base + "/search?go=1")
    listed = {a.get_attribute("href").rsplit("/", 1)[1] for a in browser.find_elements("css selector", "#results a.xid")}
    assert "M-snv-stc" in listed and "M-sotttt-mic" not in listed and "M-stc-mic" not in listed
    browser.get(base + "/exchange/M-sotttt-mic")  # guessing the URL of Sở TTTT's letter to the ministry
    assert "Không tìm thấy trao đổi này" in _text(browser) and "Giấy mời" not in _text(browser)
    browser.get(base + "/exchange/M-snv-stc")
    assert "Kế hoạch" in browser.find_element("id", "category").text


def test_an_export_of_a_search(browser: Any, base: str, home: Home) -> None:
    login(browser, base, "kiemtra")
    browser.get(base + "/search?go=1&agency=snv")
    browser.find_element("id", "export-csv").click()
    deadline = time.monotonic() + 20
    files: list[Path] = []
    while not files:  # the browser writes the download under a temporary name first
        assert time.monotonic() < deadline, "no download"
        files = [p for p in browser.downloads.iterdir() if p.suffix == ".csv"]
        time.sleep(0.05)
    with files[0].open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["id"] for r in rows} >= {"M-snv-stc", "M-citizen-snv", home.held}
    assert all("snv" in (r["sender_agency"] + r["recipient_agencies"]) for r in rows)
    assert ("console export", "kiemtra") in [(c, a.get("auditor")) for c, a in home.access()]


def test_the_monthly_report(browser: Any, base: str, home: Home) -> None:
    login(browser, base, "kiemtra")
    browser.get(base + "/report")
    field = browser.find_element("id", "period")
    field.clear()
    field.send_keys("2025-03")
    _submit(browser, "make-report")
    assert "Báo cáo sử dụng thư điện tử công vụ tháng 2025-03" in _text(browser)
    assert "Sở Nội vụ" in _text(browser) or "snv" in _text(browser)
    _shot(browser, "report")


def test_an_admin_release_appears_in_the_exchange_log(browser: Any, base: str, home: Home) -> None:
    login(browser, base, "quantri")
    browser.get(base + "/queue")
    assert home.held in _text(browser) and "cách ly / held" in _text(browser)
    _shot(browser, "queue")
    browser.find_element("id", f"pick-{home.held}").click()
    browser.find_element("id", "reason").send_keys("người nhận xác nhận")
    _submit(browser, "release")
    assert "release xong" in browser.find_element("id", "done").text
    browser.get(base + f"/exchange/{home.held}")
    rows = [r.text for r in browser.find_elements("css selector", "#deliveries tr.delivery")]
    assert any("released" in r and "console user quantri" in r and "người nhận xác nhận" in r for r in rows), rows
    assert any(s == "released" and "console user quantri" in r for s, r in home.deliveries(home.held))


def test_a_replay_of_a_month_with_a_changed_rule(browser: Any, base: str, home: Home) -> None:
    from selenium.webdriver.support.ui import Select

    login(browser, base, "quantri")
    browser.get(base + "/replay")
    Select(browser.find_element("id", "candidate")).select_by_value("official-to-unofficial-audit")
    browser.find_element("id", "replay-period").send_keys("2025-03")
    _submit(browser, "run-replay")
    assert browser.find_element("id", "changed").text == "1"
    changes = browser.find_elements("css selector", "#changes tr.change")
    assert len(changes) == 1 and "official-to-unofficial" in changes[0].text and "Từ chối" in changes[0].text
    _shot(browser, "replay")
    changes[0].find_element("css selector", "a.xid").click()
    _arrive(browser, base + "/exchange/M-sotttt-citizen")
    assert "official-to-unofficial" in browser.find_element("id", "rule").text


def test_screenshots_are_in_docs() -> None:
    """The README shows the pages: each file it names is in docs/ (made by this module with MAILGW_CONSOLE_SCREENSHOTS)."""
    docs = Path(__file__).resolve().parent.parent / "docs"
    readme = (docs.parent / "README.md").read_text(encoding="utf-8")
    for name in ("login", "search", "exchange", "report", "queue", "replay"):
        assert (docs / f"console-{name}.png").stat().st_size > 10000, name
        assert f"docs/console-{name}.png" in readme, name

#!/usr/bin/env python3
"""The web console in headless Chromium (selenium 4), against a running Downlink app.

Called by `tests/tests/web.rs` (the_console_signs_in_uploads_downloads_zips_and_renders_names_as_text),
which starts the app, a local origin for --origin-url, and uploads a file named
`<img src=x onerror=alert(1)>` into --hostile-dir beforehand. Each step saves a screenshot into
--screenshots and prints its path. Exit 0 when every check passes; otherwise a clear message, a
failure screenshot and exit 1.

    console_test.py --base-url http://127.0.0.1:PORT --token TOKEN \
        --origin-url http://127.0.0.1:PORT2/remote.bin --origin-size BYTES \
        --hostile-dir hostile --screenshots DIR --downloads DIR \
        [--chromium /usr/bin/chromium] [--chromedriver /usr/bin/chromedriver]
"""

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

HOSTILE_NAME = "<img src=x onerror=alert(1)>"
UPLOAD_NAME = "console upload é.txt"
UPLOAD_BYTES = b"".join(b"line %05d: uploaded through the Downlink console\n" % i for i in range(400))
CSP_DIRECTIVES = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "frame-ancestors 'none'",
]


class Failure(Exception):
    """A check that did not hold."""


def check(condition, message):
    if not condition:
        raise Failure(message)


class ConsoleTest:
    def __init__(self, args):
        self.args = args
        self.base = args.base_url.rstrip("/")
        self.shots = os.path.abspath(args.screenshots)
        self.downloads = os.path.abspath(args.downloads)
        self.hostile_dir = [s for s in args.hostile_dir.split("/") if s]
        self.dir_name = args.dir_name
        self.shot_no = 0
        self.logs = []
        self.driver = None
        os.makedirs(self.shots, exist_ok=True)
        os.makedirs(self.downloads, exist_ok=True)

    # ------------------------------------------------------------------ browser plumbing

    def start_browser(self):
        options = webdriver.ChromeOptions()
        options.binary_location = self.args.chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
            options.add_argument(flag)
        options.add_argument("--lang=en-US")
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": self.downloads,
                "download.prompt_for_download": False,
                "download.directory_upgrade": True,
                "safebrowsing.enabled": True,
                "profile.default_content_setting_values.automatic_downloads": 1,
            },
        )
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # An alert left open must be seen by the checks, not dismissed behind their back.
        options.unhandled_prompt_behavior = "ignore"
        self.driver = webdriver.Chrome(service=Service(executable_path=self.args.chromedriver), options=options)
        self.driver.set_page_load_timeout(30)
        for command in ("Browser.setDownloadBehavior", "Page.setDownloadBehavior"):
            try:
                self.driver.execute_cdp_cmd(command, {"behavior": "allow", "downloadPath": self.downloads})
                break
            except WebDriverException:
                continue

    def shot(self, name, focus=None):
        """A screenshot, with element `focus` (an id) scrolled into view first."""
        if focus:
            self.driver.execute_script(
                "const e = document.getElementById(arguments[0]); if (e) e.scrollIntoView({block: 'start'});", focus
            )
        self.shot_no += 1
        path = os.path.join(self.shots, "%02d-%s.png" % (self.shot_no, name))
        self.driver.save_screenshot(path)
        print("screenshot:", path, flush=True)
        return path

    def collect_logs(self):
        try:
            self.logs.extend(self.driver.get_log("browser"))
        except WebDriverException:
            pass

    def wait(self, what, condition, timeout=None):
        wait = WebDriverWait(
            self.driver,
            timeout or self.args.timeout,
            poll_frequency=0.2,
            ignored_exceptions=(StaleElementReferenceException,),
        )
        try:
            return wait.until(condition)
        except TimeoutException:
            raise Failure("timed out waiting for " + what) from None

    def by_id(self, element_id):
        return self.driver.find_element(By.ID, element_id)

    def text(self, element_id):
        return self.by_id(element_id).text.strip()

    def visible(self, element_id):
        return self.wait("#%s to be visible" % element_id, EC.visibility_of_element_located((By.ID, element_id)))

    def row(self, name):
        """The listing row whose data-name is exactly `name`, or None."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#listing-body tr[data-testid=listing-row]'))"
            ".find(r => r.dataset.name === arguments[0]) || null;",
            name,
        )

    def row_size(self, name):
        return self.driver.execute_script(
            "const r = Array.from(document.querySelectorAll('#listing-body tr[data-testid=listing-row]'))"
            ".find(r => r.dataset.name === arguments[0]);"
            "if (!r) return null; const c = r.querySelector('[data-testid=entry-size]');"
            "return c ? (c.dataset.size || null) : null;",
            name,
        )

    def click_in_row(self, name, testid):
        def attempt(driver):
            row = self.row(name)
            if row is None:
                return False
            row.find_element(By.CSS_SELECTOR, "[data-testid=%s]" % testid).click()
            return True

        self.wait("the %s control of row %r" % (testid, name), attempt)

    def open_folder(self, segs):
        box = self.by_id("goto-input")
        box.clear()
        box.send_keys("/" + "/".join(segs))
        self.by_id("goto-button").click()
        want = segs[-1] if segs else "Home"
        self.wait(
            "the breadcrumbs to end at %r" % want,
            lambda d: d.execute_script(
                "const c = document.querySelectorAll('#breadcrumbs a');"
                "return c.length && c[c.length - 1].textContent === arguments[0];",
                want,
            ),
        )
        self.wait(
            "the listing of /%s to load" % "/".join(segs),
            lambda d: d.execute_script("return !document.getElementById('listing').hasAttribute('aria-busy');"),
        )

    # ------------------------------------------------------------------ API helpers (setup only)

    def api(self, method, path, body=None):
        req = urllib.request.Request(self.base + path, data=body, method=method)
        req.add_header("Authorization", "Bearer " + self.args.token)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    # ------------------------------------------------------------------ the steps

    def check_policy(self):
        with urllib.request.urlopen(self.base + "/api/console/", timeout=30) as resp:
            csp = resp.headers.get("Content-Security-Policy")
            html = resp.read().decode("utf-8")
        check(csp, "GET /api/console/ has no Content-Security-Policy header")
        for directive in CSP_DIRECTIVES:
            check(directive in csp, "the CSP lacks %r: %s" % (directive, csp))
        check("unsafe-inline" not in csp and "unsafe-eval" not in csp, "the CSP allows unsafe code: " + csp)
        check("<script>" not in html and " style=" not in html, "the page has inline script or style")
        print("ok: the page is served with CSP:", csp, flush=True)

    def sign_in(self):
        self.driver.get(self.base + "/api/console/")
        token_input = self.visible("token-input")
        self.shot("sign-in")

        # A wrong token is refused with a message next to the form.
        token_input.send_keys("dl_not_a_real_token")
        self.by_id("signin-button").click()
        self.wait("the sign-in error for a wrong token", lambda d: self.text("signin-error"))
        message = self.text("signin-error")
        check("token" in message.lower(), "the wrong-token message does not say so: %r" % message)
        check(not self.by_id("app").is_displayed(), "a wrong token opened the console")
        self.shot("sign-in-wrong-token")
        print("ok: a wrong token is refused:", message, flush=True)

        token_input.clear()
        token_input.send_keys(self.args.token)
        self.by_id("signin-button").click()
        self.visible("app")
        self.wait("the session line", lambda d: "Signed in" in self.text("session-info"))
        self.wait("the usage panel", lambda d: self.text("usage-sent") not in ("", "–"))
        self.check_token_kept_private()
        self.shot("signed-in")
        print("ok: signed in", flush=True)

    def check_token_kept_private(self):
        token = self.args.token
        check(token not in self.driver.current_url, "the token is in the page URL")
        local = self.driver.execute_script(
            "const out = []; for (let i = 0; i < localStorage.length; i++) {"
            " const k = localStorage.key(i); out.push(k, localStorage.getItem(k)); } return out;"
        )
        check(not any(token in (v or "") for v in local), "the token is in localStorage")
        check(token not in self.driver.execute_script("return document.cookie;"), "the token is in a cookie")
        check(token not in self.driver.page_source, "the token is in the page's markup")
        check(
            self.driver.execute_script("return sessionStorage.getItem('downlink.token');") == token,
            "the token is not kept in sessionStorage",
        )

    def fresh_folder(self):
        # A fresh directory: nothing exists until a file is put there (the API has no mkdir).
        status, body = self.api("DELETE", "/" + urllib.parse.quote(self.dir_name, safe=""))
        check(status in (200, 404), "could not clear /%s before the test: %s %s" % (self.dir_name, status, body[:200]))
        self.open_folder([self.dir_name])
        self.wait(
            "the console to say the new folder does not exist yet",
            lambda d: d.find_element(By.ID, "listing-empty").is_displayed()
            and "does not exist" in self.text("listing-empty"),
        )
        self.shot("fresh-folder")
        print("ok: opened the fresh folder /%s" % self.dir_name, flush=True)

    def upload(self):
        workdir = tempfile.mkdtemp(prefix="console-upload-")
        path = os.path.join(workdir, UPLOAD_NAME)
        with open(path, "wb") as f:
            f.write(UPLOAD_BYTES)
        self.by_id("upload-input").send_keys(path)
        self.wait(
            "the upload to finish",
            lambda d: d.execute_script(
                "const i = Array.from(document.querySelectorAll('[data-testid=upload-item]'))"
                ".find(x => x.dataset.name === arguments[0]); return i ? i.dataset.status : null;",
                UPLOAD_NAME,
            )
            in ("done", "failed"),
        )
        status = self.driver.execute_script(
            "const i = Array.from(document.querySelectorAll('[data-testid=upload-item]'))"
            ".find(x => x.dataset.name === arguments[0]); return [i.dataset.status, i.textContent,"
            " i.querySelector('progress').dataset.percent];",
            UPLOAD_NAME,
        )
        check(status[0] == "done", "the upload failed: %s" % status[1])
        check(status[2] == "100", "the upload bar ended at %s %%" % status[2])
        self.wait(
            "%r in the listing with its size %d" % (UPLOAD_NAME, len(UPLOAD_BYTES)),
            lambda d: self.row_size(UPLOAD_NAME) == str(len(UPLOAD_BYTES)),
        )
        self.shot("uploaded", focus="files-section")
        print("ok: uploaded %r (%d bytes) and it is listed with its size" % (UPLOAD_NAME, len(UPLOAD_BYTES)), flush=True)

    def remote_download(self):
        self.by_id("remote-url").send_keys(self.args.origin_url)
        self.by_id("remote-submit").click()
        self.wait(
            "the download to start (or an error next to the form)",
            lambda d: self.text("remote-status") or self.text("remote-error"),
        )
        error = self.text("remote-error")
        check(not error, "starting the URL download failed: " + error)
        row = self.wait(
            "the download's row in Active downloads",
            lambda d: d.find_element(By.CSS_SELECTOR, "#active-list [data-testid=active-row]"),
        )
        download_id = row.get_attribute("data-id")
        filename = row.get_attribute("data-filename")
        check(download_id and filename, "the active row has no id or file name")
        selector = "#active-list [data-testid=active-row][data-id='%s']" % download_id.replace("'", "")

        def state(driver):
            r = driver.find_element(By.CSS_SELECTOR, selector)
            bar = r.find_element(By.CSS_SELECTOR, "[data-testid=active-progress]")
            return r.get_attribute("data-status"), bar.get_attribute("data-percent"), r.text

        def midway(driver):
            status, percent, _ = state(driver)
            if status in ("completed", "failed", "cancelled", "unknown"):
                return True
            return status == "downloading" and percent not in ("", None) and 25 <= float(percent) < 100

        # Best effort: catch it mid-way for the screenshot (a fast origin may finish first).
        try:
            WebDriverWait(self.driver, 15, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)).until(midway)
        except TimeoutException:
            pass
        status, percent, text = state(self.driver)
        if status == "downloading":
            self.shot("remote-download-running", focus="active-section")
            print("ok: running download shown at %s %%: %s" % (percent, " | ".join(text.splitlines())), flush=True)

        self.wait(
            "the URL download to end (at most %d s)" % self.args.timeout,
            lambda d: state(d)[0] in ("completed", "failed", "cancelled", "unknown"),
        )
        status, percent, text = state(self.driver)
        check(status == "completed", "the URL download ended %s: %s" % (status, text))
        check(percent == "100", "the completed download's bar shows %r %%, not 100" % percent)
        self.wait(
            "%r in the listing with its size %d" % (filename, self.args.origin_size),
            lambda d: self.row_size(filename) == str(self.args.origin_size),
        )
        self.shot("remote-download-completed", focus="files-section")
        print("ok: URL download %s completed at 100 %% and %r is listed" % (download_id, filename), flush=True)

        hist = "#history-list [data-testid=history-row][data-id='%s']" % download_id.replace("'", "")
        deadline = time.time() + self.args.timeout
        while True:
            found = self.driver.find_elements(By.CSS_SELECTOR, hist)
            if found and found[0].get_attribute("data-status") == "completed":
                break
            check(time.time() < deadline, "download %s never appeared in the history as completed" % download_id)
            try:
                WebDriverWait(self.driver, 3, poll_frequency=0.2).until(
                    lambda d: any(e.get_attribute("data-status") == "completed" for e in d.find_elements(By.CSS_SELECTOR, hist))
                )
            except (TimeoutException, StaleElementReferenceException):
                self.by_id("history-refresh").click()  # as a user would
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", self.driver.find_element(By.CSS_SELECTOR, hist))
        self.shot("history")
        print("ok: the history lists it as completed", flush=True)
        return filename

    def new_download(self, before, suffix):
        """The one new finished file in --downloads ending with `suffix`."""

        def done(_):
            names = set(os.listdir(self.downloads)) - before
            if any(n.endswith(".crdownload") or n.endswith(".tmp") for n in names):
                return False
            hits = [n for n in names if n.endswith(suffix)]
            return hits[0] if hits else False

        return os.path.join(self.downloads, self.wait("a downloaded *%s in %s" % (suffix, self.downloads), done))

    def zip_download(self, remote_name):
        for name in (UPLOAD_NAME, remote_name):
            self.click_in_row(name, "select-checkbox")
        self.wait("two selected", lambda d: "2 items" in self.text("selection-count"))
        self.by_id("zip-button").click()
        self.wait("the archive size", lambda d: d.find_element(By.ID, "zip-confirm").is_displayed() or self.text("zip-error"))
        check(not self.text("zip-error"), "preparing the ZIP failed: " + self.text("zip-error"))
        size_text = self.text("zip-size")
        size = self.by_id("zip-size").get_attribute("data-bytes")
        check(size and size.isdigit(), "the console shows no archive size: %r" % size_text)
        check(int(size) > len(UPLOAD_BYTES) + self.args.origin_size, "the archive size %s is too small" % size)
        self.shot("zip-size", focus="files-section")
        print("ok: archive size shown: %s" % size_text, flush=True)

        before = set(os.listdir(self.downloads))
        self.by_id("zip-confirm-button").click()
        path = self.new_download(before, ".zip")
        self.wait("the ZIP saved message", lambda d: "Saved" in self.text("zip-status") or self.text("zip-error"))
        check(not self.text("zip-error"), "the ZIP download failed: " + self.text("zip-error"))
        check(os.path.getsize(path) == int(size), "the saved ZIP has %d bytes, the console announced %s" % (os.path.getsize(path), size))
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            check(bad is None, "the ZIP's entry %r fails its CRC check" % bad)
            names = archive.namelist()
            check(sorted(names) == sorted([UPLOAD_NAME, remote_name]), "the ZIP holds %r" % names)
            check(archive.read(UPLOAD_NAME) == UPLOAD_BYTES, "the uploaded file's bytes differ in the ZIP")
            check(archive.getinfo(remote_name).file_size == self.args.origin_size, "the downloaded file's size differs in the ZIP")
        self.shot("zip-saved", focus="files-section")
        print("ok: saved %s: a valid ZIP with %r" % (path, names), flush=True)

        # One file selected: the API answers that file itself, saved under its name.
        self.by_id("clear-selection").click()
        self.click_in_row(UPLOAD_NAME, "select-checkbox")
        self.wait("one selected", lambda d: "1 item" in self.text("selection-count"))
        self.by_id("zip-button").click()
        self.wait("the single file's size", lambda d: d.find_element(By.ID, "zip-confirm").is_displayed() or self.text("zip-error"))
        check(not self.text("zip-error"), "preparing one file failed: " + self.text("zip-error"))
        check(self.by_id("zip-size").get_attribute("data-bytes") == str(len(UPLOAD_BYTES)), "wrong single-file size: " + self.text("zip-size"))
        before = set(os.listdir(self.downloads))
        self.by_id("zip-confirm-button").click()
        single = self.new_download(before, ".txt")
        check(os.path.basename(single) == UPLOAD_NAME, "the single file was saved as %r" % os.path.basename(single))
        with open(single, "rb") as f:
            check(f.read() == UPLOAD_BYTES, "the single file's bytes differ")
        self.by_id("clear-selection").click()
        print("ok: one selected file is saved as itself: %s" % single, flush=True)

        self.wait("the usage panel to count the bytes sent", lambda d: int(self.by_id("usage-sent").get_attribute("data-bytes") or 0) > 0)

    def delete_file(self):
        self.click_in_row(UPLOAD_NAME, "row-delete")
        alert = self.wait("the delete confirmation", EC.alert_is_present(), timeout=10)
        check(UPLOAD_NAME in alert.text, "the confirmation does not name the file: %r" % alert.text)
        alert.accept()
        self.wait("%r to leave the listing" % UPLOAD_NAME, lambda d: self.row(UPLOAD_NAME) is None)
        print("ok: deleted %r after confirming" % UPLOAD_NAME, flush=True)

    def hostile_names(self):
        self.open_folder(self.hostile_dir)
        row = self.wait("the row of the hostile name", lambda d: self.row(HOSTILE_NAME))
        shown = row.find_element(By.CSS_SELECTOR, "[data-testid=entry-name]").text
        check(shown == HOSTILE_NAME, "the name is shown as %r, not as the literal text" % shown)
        check(HOSTILE_NAME in row.text, "the row's text lacks the literal name: %r" % row.text)
        images = self.driver.find_elements(By.CSS_SELECTOR, "#listing img, #app img")
        check(not images, "the listing contains %d <img> element(s): markup was injected" % len(images))
        check(self.driver.execute_script("return document.images.length;") == 0, "the page contains an <img>")
        check(self.driver.execute_script("return typeof window.__xss === 'undefined';"), "window.__xss was set")
        try:
            alert = self.driver.switch_to.alert
            text = alert.text
            raise Failure("an alert is open (%r): the name ran as script" % text)
        except NoAlertPresentException:
            pass
        self.shot("hostile-name")
        print("ok: %r is shown as text, no <img>, no alert" % HOSTILE_NAME, flush=True)

    def phone(self):
        self.open_folder([self.dir_name])
        self.wait("the listing", lambda d: self.row_size_any())
        self.driver.set_window_size(390, 844)
        self.wait("the narrow layout", lambda d: d.execute_script("return window.innerWidth <= 400;"), timeout=10)
        overflow = self.driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
        )
        self.driver.execute_script("document.getElementById('files-section').scrollIntoView();")
        self.shot("phone-listing")
        check(overflow <= 1, "at 390 px the page scrolls sideways by %d px" % overflow)
        self.driver.set_window_size(1280, 900)
        print("ok: readable at 390 px (no sideways scrolling)", flush=True)

    def row_size_any(self):
        return self.driver.execute_script("return document.querySelectorAll('#listing-body tr').length > 0;")

    def sign_out(self):
        self.by_id("signout-button").click()
        self.visible("token-input")
        check(
            self.driver.execute_script("return sessionStorage.getItem('downlink.token');") is None,
            "the token is still in sessionStorage after signing out",
        )
        check(not self.driver.find_elements(By.CSS_SELECTOR, "#listing-body tr"), "the listing is still on the page after signing out")
        self.shot("signed-out")
        print("ok: signed out, token forgotten", flush=True)

    def check_console_log(self):
        self.collect_logs()
        problems = []
        for entry in self.logs:
            message = entry.get("message", "")
            lowered = message.lower()
            if "content security policy" in lowered or "refused to" in lowered or "uncaught" in lowered:
                problems.append(message)
        if problems:
            raise Failure("the browser console reports CSP violations or script errors:\n  " + "\n  ".join(problems))
        print("ok: no CSP violation or script error in the browser console (%d entries)" % len(self.logs), flush=True)

    def run(self):
        self.check_policy()
        self.start_browser()
        self.sign_in()
        self.fresh_folder()
        self.upload()
        remote_name = self.remote_download()
        self.zip_download(remote_name)
        self.delete_file()
        self.hostile_names()
        self.phone()
        self.check_token_kept_private()
        self.sign_out()
        self.check_console_log()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--origin-url", required=True)
    parser.add_argument("--origin-size", required=True, type=int)
    parser.add_argument("--hostile-dir", required=True)
    parser.add_argument("--screenshots", required=True)
    parser.add_argument("--downloads", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--dir-name", default="console-test", help="the fresh folder the test works in")
    parser.add_argument("--timeout", type=int, default=60, help="seconds any one step may take")
    args = parser.parse_args()

    test = ConsoleTest(args)
    try:
        test.run()
    except Exception as e:  # noqa: BLE001 - every failure gets the same report
        if isinstance(e, Failure):
            print("FAILED: %s" % e, file=sys.stderr, flush=True)
        else:
            print("FAILED: unexpected %s: %s" % (type(e).__name__, e), file=sys.stderr, flush=True)
            traceback.print_exc()
        if test.driver is not None:
            try:
                path = os.path.join(test.shots, "failure.png")
                test.driver.save_screenshot(path)
                print("failure screenshot:", path, file=sys.stderr, flush=True)
            except WebDriverException:
                pass
            test.collect_logs()
            for entry in test.logs[-30:]:
                print("browser log:", json.dumps(entry), file=sys.stderr)
            test.driver.quit()
        return 1
    test.driver.quit()
    print("PASSED: the console test", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The browser console (issue 14), in Debian's Chromium driven by Playwright, against a site
made by `att-jm setup` (authentication, ACL, client-id plugin, the WebSocket listener), the
real `att-jm serve` and the console's own server, all as `./run.sh` starts them.

Every effect of an action taken in the page is checked in the service's views (`views.get`
over MQTT as another operator), not only in the page. One site, service, console server and
browser serve the whole module; each test uses names of its own. Each page's screenshot is
saved under test-artifacts/console/ (ignored by git).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import Console, ConsoleServer, chromium, require_playwright
from helpers.mqtt import TestClient
from helpers.service import Service
from helpers.site import SecureSite
from helpers.waits import eventually

from .conftest import CONSOLE_VIEW_ROWS, Operator

require_playwright()
from playwright.sync_api import Browser, expect  # noqa: E402 -- after the check above

P = "att"
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def operator(console_site: SecureSite, console_service: Service) -> Iterator[Operator]:
    """Another operator's MQTT client: how the tests read the service's views and notify."""
    with TestClient(console_site.url("operator")) as client:
        yield Operator(console_service, client, actor="operator")


@pytest.fixture(autouse=True)
def _no_interval(request: pytest.FixtureRequest) -> None:
    """Each test that runs scripts starts with no interval between two runs."""
    if "operator" in request.fixturenames:
        request.getfixturevalue("operator").ok("settings.set", {"interval_seconds": 0})


@pytest.fixture(scope="module")
def channel_manager(console_site: SecureSite) -> Iterator[TestClient]:
    with TestClient(console_site.url("channel-manager")) as client:
        yield client


@pytest.fixture(scope="module")
def console(
    browser: Browser, console_site: SecureSite, console_service: Service,
    console_server: ConsoleServer,
) -> Iterator[Console]:
    """The operator's console, logged in once for the module; no page error by the end."""
    page = Console(browser, console_server.url).login("operator", console_site.password("operator"))
    page.page.evaluate("window.__loadedOnce = true")
    yield page
    errors = page.errors
    page.close()
    assert errors == [], errors


def not_reloaded(console: Console) -> bool:
    return bool(console.page.evaluate("window.__loadedOnce === true"))


def notify(client: TestClient, trigger: str, **payload: Any) -> str:
    nid = payload.setdefault("id", f"n-{uuid.uuid4().hex[:10]}")
    client.publish(f"{P}/channel-manager/notifications/{trigger}", payload)
    return str(nid)


def row_of(operator: Operator, view: str, key: str) -> dict[str, Any] | None:
    """The service's row `key` of `view` (views.get with its id), None when it has none."""
    reply = operator.command("views.get", {"view": view, "id": key})
    if reply["ok"]:
        return dict(reply["result"]["row"])
    assert reply["error"]["code"] == "not_found", reply
    return None


def shown_ids(console: Console, view: str) -> list[str]:
    """The ids of the rows the page shows, in their order."""
    ids: list[str] = console.rows(view).evaluate_all("rows => rows.map(r => r.dataset.id)")
    return ids


def view_ids(operator: Operator, view: str, count: int) -> list[str]:
    """The ids of the first `count` rows of `view`, read in pages of the row cap."""
    ids: list[str] = []
    while len(ids) < count:
        page = operator.ok("views.get", {"view": view, "offset": len(ids),
                                         "limit": CONSOLE_VIEW_ROWS})
        ids += [row["id"] for row in page["rows"]]
        if not page["rows"]:
            break
    return ids[:count]


@contextlib.contextmanager
def relay_paused(service: Service) -> Iterator[int]:
    """The service's relay stopped (SIGSTOP): the retained views stay as they are while the
    service goes on; continued at the end."""
    assert service.pid is not None
    children = [int(pid) for pid in os.listdir("/proc") if pid.isdigit()
                and _parent_and_command(int(pid)) == (service.pid, True)]
    assert len(children) == 1, f"the relay of {service.pid}: {children}"
    os.kill(children[0], signal.SIGSTOP)
    try:
        yield children[0]
    finally:
        os.kill(children[0], signal.SIGCONT)


def _parent_and_command(pid: int) -> tuple[int, bool] | None:
    """(parent pid, whether it runs att_jm.relay), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1]), b"att_jm.relay" in command


def entry_of(operator: Operator, view: str, nid: str) -> dict[str, Any]:
    """The row of `view` that notification `nid` made (the view's first page is capped, so
    every page is read)."""
    def find() -> dict[str, Any] | None:
        offset = 0
        while True:
            page = operator.ok("views.get", {"view": view, "offset": offset,
                                             "limit": CONSOLE_VIEW_ROWS})
            for row in page["rows"]:
                if row["notification_id"] == nid:
                    return dict(row)
            offset += len(page["rows"])
            if not page["rows"] or offset >= page["total"]:
                return None
    found: dict[str, Any] = eventually(find, f"{nid} in {view}")
    return found


# --- the server ---------------------------------------------------------------------------------

def fetch(
    url: str, *, method: str = "GET", host: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)  # noqa: S310 -- a loopback http:// URL
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_server_serves_only_the_built_files_with_a_content_security_policy(
    console_server: ConsoleServer, console_site: SecureSite,
) -> None:
    status, headers, body = fetch(console_server.url)
    assert status == 200 and b'<script type="module" src="main.js">' in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert f"connect-src 'self' {console_site.ws_url}" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    status, headers, body = fetch(console_server.url + "main.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    status, _, body = fetch(console_server.url + "config.json")
    assert status == 200 and f'"ws_url":"{console_site.ws_url}"'.encode() in body
    for path in ("vendor/", "../pyproject.toml", "%2e%2e/pyproject.toml", "src/main.js", "x"):
        assert fetch(console_server.url + path)[0] == 404, path
    assert fetch(console_server.url, method="POST")[0] == 405
    # A page of another site that points its name at 127.0.0.1 (DNS rebinding) is refused.
    assert fetch(console_server.url, host=f"evil.example:{console_server.port}")[0] == 400


# --- login and roles ----------------------------------------------------------------------------

def test_login_takes_the_right_password_and_refuses_a_wrong_one(
    browser: Browser, console_site: SecureSite, console_service: Service,
    console_server: ConsoleServer,
) -> None:
    page = Console(browser, console_server.url)
    try:
        page.submit_login("operator", "not-the-password")
        expect(page.test_id("login-error")).to_contain_text("Login refused")
        expect(page.page.locator("#app")).to_be_hidden()
        page.submit_login("operator", console_site.password("operator"))
        expect(page.page.locator("#app")).to_be_visible()
        expect(page.test_id("connection")).to_have_attribute("data-state", "connected")
        expect(page.test_id("service")).to_have_attribute("data-state", "online")
        expect(page.test_id("who")).to_have_text("operator · operator")
        assert page.page.evaluate("localStorage.length + sessionStorage.length") == 0
        assert page.context.cookies() == []
        page.page.click("#logout")
        expect(page.page.locator("#login-screen")).to_be_visible()
        expect(page.page.locator("#login-password")).to_have_value("")
        assert [e for e in page.errors if "not-the-password" in e] == []
    finally:
        page.close()


def test_an_auditor_sees_every_page_read_only(
    browser: Browser, console_site: SecureSite, console_service: Service,
    console_server: ConsoleServer, operator: Operator,
) -> None:
    operator.add_job("audited", "ok", "console-audit")
    page = Console(browser, console_server.url).login("auditor", console_site.password("auditor"))
    try:
        expect(page.test_id("who")).to_have_text("auditor · read-only (auditor)")
        jobs = page.open("jobs")
        expect(page.row("jobs", "audited")).to_have_count(1)
        for name in ("jobs", "queue", "executed", "failed"):
            section = page.open(name)
            expect(page.test_id(f"table-{name}")).to_be_visible()
            expect(section.locator("td.actions, th.actions-head")).to_have_count(0)
            expect(section.locator(".page-actions button")).to_have_count(0)
        expect(jobs.get_by_test_id("add-job")).to_have_count(0)
        assert page.errors == []
    finally:
        page.close()


# --- live pages ---------------------------------------------------------------------------------

def test_a_notification_shows_in_the_queue_running_then_in_executed_without_a_reload(
    console: Console, operator: Operator, channel_manager: TestClient,
) -> None:
    operator.add_job("slow", "sleep-then-ok", "console-slow", command="{seconds}")
    console.open("queue")
    first = notify(channel_manager, "console-slow", seconds="2.5")
    waiting = [notify(channel_manager, "console-slow", seconds="0.1") for _ in range(2)]
    running = console.row("queue", first)
    expect(running).to_have_class("running")
    expect(running.get_by_test_id("elapsed")).to_have_text(re.compile(r"\d"))
    expect(console.row("queue", waiting[1])).to_be_visible()
    console.screenshot("queue")
    console.open("executed")
    expect(console.row("executed", first)).to_be_visible(timeout=20_000)
    for nid in waiting:
        expect(console.row("executed", nid)).to_be_visible()
    assert not_reloaded(console)
    assert entry_of(operator, "executed", first)["result"] == 3
    console.screenshot("executed")
    # Hostile text from whoever may publish a notification is shown as text, never as HTML.
    hostile = f"<img src=x onerror=window.__pwned=1>{uuid.uuid4().hex[:6]}"
    notify(channel_manager, "console-slow", seconds="0", id=hostile)
    expect(console.row("executed", hostile)).to_be_visible()
    assert console.page.evaluate("window.__pwned === undefined && document.images.length === 0")


def test_jobs_are_added_edited_disabled_and_removed_through_the_page(
    console: Console, operator: Operator,
) -> None:
    page = console.open("jobs")
    page.get_by_test_id("add-job").click()
    dialog = console.test_id("job-dialog")
    dialog.get_by_test_id("field-name").fill("console-ipx")
    dialog.get_by_test_id("field-script").fill("no-such-script")
    dialog.get_by_test_id("field-trigger").fill("console-up")
    dialog.get_by_test_id("field-command").fill("channel={channel}")
    dialog.get_by_test_id("job-submit").click()
    # The service's error is shown next to the field it names; nothing was added.
    expect(dialog.get_by_test_id("error-script")).to_contain_text(
        "invalid: script 'no-such-script'")
    expect(dialog.get_by_test_id("error-trigger")).to_have_text("")
    assert row_of(operator, "jobs", "console-ipx") is None
    dialog.get_by_test_id("field-timeout_seconds").fill("0")
    dialog.get_by_test_id("field-script").fill("ipx-update")
    dialog.get_by_test_id("job-submit").click()
    expect(dialog.get_by_test_id("error-timeout_seconds")).to_contain_text(
        "timeout_seconds must be")
    dialog.get_by_test_id("field-timeout_seconds").fill("30")
    dialog.get_by_test_id("field-retry_max_attempts").fill("3")
    dialog.get_by_test_id("field-retry_delay_seconds").fill("5")
    dialog.get_by_test_id("job-submit").click()
    expect(dialog).to_have_count(0)
    added = row_of(operator, "jobs", "console-ipx")
    assert added is not None
    assert (added["script"], added["trigger"], added["command"], added["timeout_seconds"]) == (
        "ipx-update", "console-up", "channel={channel}", 30.0)
    assert added["retry"] == {"max_attempts": 3, "delay_seconds": 5.0, "backoff": 1.0}
    expect(console.row("jobs", "console-ipx")).to_contain_text("3 attempts, 5 s \u00d7 1")
    console.screenshot("jobs")

    console.act("jobs", "console-ipx", "edit")
    dialog = console.test_id("job-dialog")
    dialog.get_by_test_id("field-trigger").fill("console-down")
    dialog.get_by_test_id("field-retry_max_attempts").fill("")
    dialog.get_by_test_id("job-submit").click()
    expect(dialog).to_have_count(0)
    edited = eventually(lambda: (row := row_of(operator, "jobs", "console-ipx"))
                        and row["trigger"] == "console-down" and row, "the trigger changed")
    assert edited["retry"] is None

    console.act("jobs", "console-ipx", "disable")
    eventually(lambda: row_of(operator, "jobs", "console-ipx")["enabled"] is False,  # type: ignore[index]
               "the job disabled")
    expect(console.row("jobs", "console-ipx").get_by_test_id("enable")).to_be_visible()

    console.act("jobs", "console-ipx", "remove")
    console.test_id("confirm-dialog").get_by_text("Cancel").click()
    assert row_of(operator, "jobs", "console-ipx") is not None  # cancelled: still there
    console.act("jobs", "console-ipx", "remove", confirm=True)
    eventually(lambda: row_of(operator, "jobs", "console-ipx") is None, "the job removed")
    expect(console.row("jobs", "console-ipx")).to_have_count(0)


def test_the_queue_interval_execute_now_and_remove_through_the_page(
    console: Console, operator: Operator, channel_manager: TestClient,
) -> None:
    operator.add_job("quick", "ok", "console-quick")
    page = console.open("queue")
    page.get_by_test_id("interval-edit").click()
    field = page.get_by_test_id("field-interval_seconds")
    field.fill("-5")
    page.get_by_test_id("interval-save").click()
    expect(page.get_by_test_id("error-interval_seconds")).to_contain_text(
        "interval_seconds must be a number from 0")
    field.fill("600")
    page.get_by_test_id("interval-save").click()
    expect(page.get_by_test_id("interval-value")).to_have_text("Interval between two runs: 10 min")
    assert operator.view("settings")["settings"]["interval_seconds"] == 600
    # The last run ended less than 600 s ago: both wait.
    now, later = notify(channel_manager, "console-quick"), notify(channel_manager, "console-quick")
    expect(console.row("queue", later)).to_be_visible()
    console.act("queue", now, "execute-now")
    executed = entry_of(operator, "executed", now)
    assert executed["result"] == 3
    console.act("queue", later, "remove", confirm=True)
    expect(console.row("queue", later)).to_have_count(0)
    queued = operator.view("queue")
    assert all(row["notification_id"] != later for row in queued["rows"])
    assert queued["total"] == 0
    page.get_by_test_id("interval-edit").click()
    page.get_by_test_id("field-interval_seconds").fill("0")
    page.get_by_test_id("interval-save").click()
    expect(page.get_by_test_id("interval-value")).to_have_text("Interval between two runs: 0 s")
    assert operator.view("settings")["settings"]["interval_seconds"] == 0


LONG_FAIL = """#!/bin/sh
# Fails with a Feedback longer than a view's cell (1,024 characters): the page shows it in full.
why=$(printf 'the channel did not answer; %.0s' $(seq 60))
printf '{"result": 2, "feedback": "%s: %s"}\\n' "$1" "$why"
"""


def test_a_failed_entry_is_executed_again_traced_and_deleted_through_the_page(
    console: Console, operator: Operator, channel_manager: TestClient, console_site: SecureSite,
) -> None:
    script = console_site.directory / "scripts" / "long-fail"
    script.write_text(LONG_FAIL, encoding="utf-8")
    script.chmod(0o755)
    operator.add_job("fails", "long-fail", "console-fail", command="{channel}")
    nid = notify(channel_manager, "console-fail", channel="BBC Two")
    console.open("failed")
    failed = entry_of(operator, "failed", nid)
    assert len(failed["feedback"]) > 1024  # the view cuts it: "Show all" reads the row in full
    row = console.row("failed", nid)
    row.get_by_test_id("feedback-all").click()
    expect(row.locator("td.col-feedback")).to_have_text(
        row_of(operator, "failed", failed["id"])["feedback"])  # type: ignore[index]
    console.act("failed", nid, "execute-again")
    eventually(lambda: (again := row_of(operator, "failed", failed["id"]))
               and again["attempt"] == 2, "attempt 2 in Failed")
    expect(row.locator("td.col-attempt")).to_have_text("2")
    console.screenshot("failed")

    row.locator("td.col-job").click()  # a row opens its trace
    trace = console.test_id("trace")
    expect(trace.get_by_test_id("trace-completeness")).to_contain_text("lineage from the log")
    expect(trace.get_by_test_id("trace-payload")).to_contain_text("BBC Two")
    expect(trace.get_by_test_id("trace-attempts").locator("tbody tr")).to_have_count(2)
    expect(trace.get_by_test_id("trace-actions")).to_contain_text("failed.execute")
    expect(trace.get_by_test_id("trace-actions")).to_contain_text("operator")
    console.screenshot("trace", height=1700)
    console.page.keyboard.press("Escape")
    expect(console.test_id("trace-dialog")).to_have_count(0)

    console.act("failed", nid, "delete", confirm=True)
    eventually(lambda: row_of(operator, "failed", failed["id"]) is None, "deleted from Failed")
    expect(console.row("failed", nid)).to_have_count(0)


def test_executed_rows_are_removed_and_auto_cleanup_is_set_and_run_through_the_page(
    console: Console, operator: Operator, channel_manager: TestClient,
) -> None:
    operator.add_job("kept", "ok", "console-kept")
    nid = notify(channel_manager, "console-kept")
    entry = entry_of(operator, "executed", nid)
    console.open("executed")
    console.act("executed", nid, "remove", confirm=True)
    eventually(lambda: row_of(operator, "executed", entry["id"]) is None, "removed from Executed")

    console.test_id("cleanup-open-executed").click()
    dialog = console.test_id("cleanup-dialog")
    dialog.get_by_test_id("field-method").select_option("rows")
    dialog.get_by_test_id("field-max_rows").fill("20000")
    dialog.get_by_test_id("field-every_seconds").fill("120")
    dialog.get_by_test_id("cleanup-save").click()
    expect(dialog.get_by_test_id("error-max_rows")).to_contain_text("max_rows must be an integer")
    console.screenshot("cleanup")
    dialog.get_by_test_id("field-max_rows").fill("50")
    dialog.get_by_test_id("cleanup-save").click()
    expect(dialog).to_have_count(0)
    settings = operator.view("settings")["settings"]
    assert settings["executed_cleanup"] == {"max_rows": 50, "max_age_days": None,
                                            "every_seconds": 120.0}
    expect(console.test_id("cleanup-summary-executed")).to_have_text(
        "Row count: keeps the newest 50 rows; runs every 2 min")
    console.test_id("cleanup-open-executed").click()
    dialog = console.test_id("cleanup-dialog")
    dialog.get_by_test_id("cleanup-now").click()
    expect(console.test_id("toast-ok").last).to_contain_text("Auto Cleanup of executed ran now")
    dialog.locator(".close").click()


def test_automatic_archival_is_set_and_turned_off_through_the_page(
    console: Console, operator: Operator,
) -> None:
    """The `archive` setting (issue 16: configured like Auto Cleanup) from the Queue page:
    off by default, a refused value shown next to its field, then on, then off again; each
    effect checked in the service's settings view."""
    console.open("queue")
    expect(console.test_id("archive-summary")).to_have_text("off")
    console.test_id("archive-open").click()
    dialog = console.test_id("archive-dialog")
    expect(dialog.get_by_test_id("field-max_age_days")).to_have_value("")
    dialog.get_by_test_id("field-max_age_days").fill("0")
    dialog.get_by_test_id("archive-save").click()
    expect(dialog.get_by_test_id("error-max_age_days")).to_contain_text("archive.max_age_days")
    assert operator.view("settings")["settings"]["archive"]["max_age_days"] is None
    dialog.get_by_test_id("field-max_age_days").fill("90")
    dialog.get_by_test_id("field-every_seconds").fill("86400")
    dialog.get_by_test_id("archive-save").click()
    expect(dialog).to_have_count(0)
    assert operator.view("settings")["settings"]["archive"] == {"max_age_days": 90,
                                                                 "every_seconds": 86400}
    expect(console.test_id("archive-summary")).to_have_text(
        "archives the sealed events older than 90 days, every 1 d")
    console.screenshot("archive")
    console.test_id("archive-open").click()
    dialog = console.test_id("archive-dialog")
    expect(dialog.get_by_test_id("field-max_age_days")).to_have_value("90")
    dialog.get_by_test_id("field-max_age_days").fill("")
    dialog.get_by_test_id("archive-save").click()
    expect(dialog).to_have_count(0)
    assert operator.view("settings")["settings"]["archive"]["max_age_days"] is None
    expect(console.test_id("archive-summary")).to_have_text("off")


def test_tables_page_past_the_row_cap_sort_and_filter(
    console: Console, operator: Operator, channel_manager: TestClient,
) -> None:
    operator.add_job("many", "ok", "console-many")
    ids = [notify(channel_manager, "console-many", id=f"m-{i:02d}-{uuid.uuid4().hex[:6]}")
           for i in range(CONSOLE_VIEW_ROWS + 3)]
    entry_of(operator, "executed", ids[-1])
    total = operator.view("executed")["total"]
    assert total > CONSOLE_VIEW_ROWS + 2
    console.open("executed")
    console.test_id("page-size-executed").select_option("10")
    # The retained view holds CONSOLE_VIEW_ROWS rows; the rest come from views.get pages.
    expect(console.rows("executed")).to_have_count(min(total, 10))
    expect(console.test_id("info-executed")).to_have_text(f"{total} rows")
    beyond = operator.ok("views.get", {"view": "executed", "offset": CONSOLE_VIEW_ROWS,
                                       "limit": CONSOLE_VIEW_ROWS})["rows"]
    # The retained view may still lag the service (the relay publishes views a few times a
    # second): the page shows one position's rows, the service's once the relay caught up.
    eventually(lambda: shown_ids(console, "executed")[CONSOLE_VIEW_ROWS:2 * CONSOLE_VIEW_ROWS]
               == [row["id"] for row in beyond], "the rows past the retained ones")
    console.test_id("filter-executed").fill(ids[0])
    expect(console.rows("executed")).to_have_count(1)
    expect(console.rows("executed")).to_contain_text(ids[0])
    # The view moves (one more execution) while the filter shows a row past the retained
    # ones: the console fetches those rows again for the new position, the row stays found.
    ids.append(notify(channel_manager, "console-many", id=f"m-99-{uuid.uuid4().hex[:6]}"))
    entry_of(operator, "executed", ids[-1])
    expect(console.test_id("info-executed")).to_contain_text(f"({total + 1} in the view)")
    expect(console.rows("executed")).to_have_count(1)
    expect(console.rows("executed")).to_contain_text(ids[0])
    console.test_id("filter-executed").fill("console-many")
    expect(console.rows("executed")).to_have_count(len(ids))
    console.test_id("sort-executed-notification_id").click()
    expect(console.page.locator("th[aria-sort=ascending]")).to_have_text(re.compile("Notification"))
    notifications = console.rows("executed").locator("td.col-notification_id").all_inner_texts()
    assert notifications == ids  # the view's order is newest first
    console.test_id("filter-executed").fill("")
    console.test_id("sort-executed-notification_id").click()
    console.test_id("sort-executed-notification_id").click()  # back to the view's order


def test_a_page_is_shown_at_one_position_while_the_retained_view_lags(
    console: Console, operator: Operator, channel_manager: TestClient, console_service: Service,
) -> None:
    """With the relay stopped the retained view stays behind the service; a page past it
    reads the newer view with `views.get`, and the console then reads the retained rows
    again at that position instead of showing them next to rows read later (which showed
    the rows that had moved down twice, and none of the new ones)."""
    operator.add_job("lagging", "ok", "console-lag")
    nid = ""
    for _ in range(14):
        nid = notify(channel_manager, "console-lag")
    entry_of(operator, "executed", nid)
    console.open("executed")
    console.test_id("filter-executed").fill("")
    console.test_id("page-size-executed").select_option("10")
    eventually(lambda: shown_ids(console, "executed") == view_ids(operator, "executed", 10),
               "the first page, as the service has it")
    with relay_paused(console_service):
        later = [notify(channel_manager, "console-lag") for _ in range(2)]
        entry_of(operator, "executed", later[-1])
        console.test_id("page-size-executed").select_option("25")
        expected = view_ids(operator, "executed", 25)
        assert len(expected) == 25
        shown = eventually(lambda: (ids := shown_ids(console, "executed")) == expected and ids,
                           "the page read at the service's position", timeout=5)
        assert len(set(shown)) == len(shown)
        expect(console.rows("executed").first).to_contain_text(later[-1])
    console.test_id("page-size-executed").select_option("10")


def test_a_fault_in_the_service_status_is_shown_on_every_page(
    console: Console, console_site: SecureSite,
) -> None:
    """The status the service publishes during a store fault (its form, sent here as the
    service's user since a real disk fault cannot be made on demand), then its end."""
    topic = f"{P}/job-manager/status"
    with TestClient(console_site.url("att-job-manager")) as service:
        online = service.retained(topic)
        assert online["state"] == "online"
        fault = {"kind": "store", "message": "OperationalError('disk I/O error')",
                 "since": online["at"], "paused": True}
        service.publish(topic, {**online, "fault": fault}, retain=True)
        for name in ("jobs", "failed"):
            console.open(name)
            expect(console.test_id("fault")).to_contain_text(
                "Fault (store) since")
            expect(console.test_id("fault")).to_contain_text("disk I/O error")
        expect(console.test_id("service")).to_have_attribute("data-state", "fault")
        console.screenshot("fault")
        service.publish(topic, online, retain=True)
        expect(console.test_id("fault")).to_be_hidden()
        expect(console.test_id("service")).to_have_attribute("data-state", "online")


def test_the_page_says_when_the_broker_or_the_service_restarts_and_recovers_by_itself(
    console: Console, operator: Operator, channel_manager: TestClient,
    console_site: SecureSite, console_service: Service,
) -> None:
    console.open("executed")
    console_site.broker.stop()
    expect(console.test_id("connection")).to_have_attribute("data-state", "reconnecting")
    expect(console.test_id("notice")).to_contain_text("The connection to the broker is lost")
    console.screenshot("broker-down")
    console_site.broker.start()
    expect(console.test_id("connection")).to_have_attribute("data-state", "connected")
    expect(console.test_id("notice")).to_be_hidden()

    console_service.stop()
    expect(console.test_id("service")).to_have_attribute("data-state", "offline")
    expect(console.test_id("notice")).to_contain_text("The service is offline")
    console_service.start()
    expect(console.test_id("service")).to_have_attribute("data-state", "online")
    expect(console.test_id("notice")).to_be_hidden()

    operator.add_job("after", "ok", "console-after")
    nid = notify(channel_manager, "console-after")
    expect(console.row("executed", nid)).to_be_visible()
    assert not_reloaded(console)

"""The board in a real browser: Playwright driving Debian's chromium, against a real
`pipelined serve` and a real daemon."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from conftest import DaemonProcess, Served, Stories, wait_until
from playwright.sync_api import expect

CHROMIUM = "/usr/bin/chromium"
# A real browser per module: in the slow pass of `.ci/run` (-m slow), beside the other
# heavy tests, so the default suite stays about two minutes.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                 reason="needs Debian's chromium (apt-get install chromium)")]

XSS_NAME = '<img src=x onerror="window.__pwned = 1">'
XSS_BODY = ('<script>window.__pwned = 2</script>\n\n'
            '[click me](javascript:window.__pwned=3)\n\n'
            '<img src=x onerror="window.__pwned = 4">\n\n'
            '![tracker](http://203.0.113.9/pixel.png)\n')


@pytest.fixture
def board(stories: Stories, daemon: DaemonProcess) -> Iterator[tuple[Served, DaemonProcess]]:
    stories.write("1_backlog", "10_story_login", name="Login form", agent="coder-1",
                  body="# Login\n\nA **password** field.\n")
    stories.write("1_backlog", "11_story_export", name="Export CSV", depends_on=[10])
    stories.write("2_current", "12_bug_crash", name="Crash on save", blocked=True)
    stories.write("4_merge", "13_story_xss", f"---\nname: '{XSS_NAME}'\n---\n{XSS_BODY}")
    daemon.start()
    daemon.wait_row("13_story_xss")
    server = Served(stories, daemon.db)
    try:
        yield server, daemon
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One chromium for the module (each test opens its own pages)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def open_board(browser: object, served: Served, **context: object) -> object:
    page = browser.new_page(**context)  # type: ignore[attr-defined]
    page.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))
    page.goto(f"http://{served.host}/")
    page.wait_for_selector("body[data-ready=true]")
    return page


def card(page: object, story_id: str) -> object:
    return page.locator(f'article.card[data-id="{story_id}"]')  # type: ignore[attr-defined]


class TestTheBoard:
    def test_columns_counts_and_cards(self, board: tuple[Served, DaemonProcess],
                                      browser: object) -> None:
        page = open_board(browser, board[0])
        columns = page.locator("section.column")
        assert columns.count() == 3
        assert page.locator('section[data-stage="1_backlog"] .count').inner_text() == "2"
        login = card(page, "10_story_login")
        assert "Login form" in login.inner_text() and "@coder-1" in login.inner_text()
        assert "waits on #10" in card(page, "11_story_export").inner_text()
        assert "blocked" in card(page, "12_bug_crash").inner_text()

    def test_a_save_in_an_editor_changes_only_that_card(
            self, board: tuple[Served, DaemonProcess], browser: object,
            stories: Stories) -> None:
        page = open_board(browser, board[0])
        page.evaluate(
            "document.querySelector('[data-id=\"10_story_login\"]').dataset.mark = 'kept'")
        stories.write("2_current", "12_bug_crash", name="Crash on save, fixed")
        expect(card(page, "12_bug_crash")).to_contain_text("fixed")
        assert page.locator('[data-id="10_story_login"]').get_attribute("data-mark") == "kept"
        assert "blocked" not in card(page, "12_bug_crash").inner_text()
        stories.move("11_story_export", "1_backlog", "4_merge")
        expect(page.locator('section[data-stage="4_merge"] [data-id="11_story_export"]')
               ).to_be_visible()
        expect(page.locator('section[data-stage="1_backlog"] .count')).to_have_text("1")

    def test_drag_a_card_to_move_the_story(self, board: tuple[Served, DaemonProcess],
                                           browser: object, stories: Stories) -> None:
        page = open_board(browser, board[0])
        page.drag_and_drop('[data-id="10_story_login"]', 'section[data-stage="2_current"]')
        wait_until(lambda: stories.path("2_current", "10_story_login").exists(),
                   what="the file renamed into 2_current")
        assert not stories.path("1_backlog", "10_story_login").exists()
        page.wait_for_selector('section[data-stage="2_current"] [data-id="10_story_login"]')
        assert board[1].wait_row("10_story_login", lambda r: r["stage"] == "2_current")

    def test_a_card_opens_the_story_rendered(self, board: tuple[Served, DaemonProcess],
                                            browser: object) -> None:
        page = open_board(browser, board[0])
        card(page, "10_story_login").click()
        page.wait_for_selector("dialog[open] #story-body strong")
        assert page.locator("#story-body strong").inner_text() == "password"
        assert page.locator("#story-title").inner_text() == "Login form"


class TestHostileStories:
    def test_nothing_in_a_story_runs(self, board: tuple[Served, DaemonProcess],
                                     browser: object) -> None:
        """A name with `<img onerror>`, a body with `<script>`, an `onerror` image and a
        `javascript:` link: shown as text, nothing runs, no request leaves for the
        tracker picture."""
        page = open_board(browser, board[0])
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        xss = card(page, "13_story_xss")
        assert XSS_NAME in xss.inner_text()
        xss.click()
        page.wait_for_selector("dialog[open]")
        body = page.locator("#story-body")
        assert "<script>" in body.inner_text()
        assert body.locator("script, img[onerror], a[href^=javascript]").count() == 0
        for link in body.locator("a").all():
            link.click()
        page.locator("#story-close").click()
        assert page.evaluate("window.__pwned") is None
        assert not any("203.0.113.9" in url for url in requests)


class TestSmallScreens:
    def test_a_phone_sized_viewport_is_usable(self, board: tuple[Served, DaemonProcess],
                                             browser: object) -> None:
        page = open_board(browser, board[0], viewport={"width": 390, "height": 844})
        first = page.locator("section.column").first.bounding_box()
        assert first is not None and first["width"] <= 390 and first["x"] >= 0
        assert page.locator("header.bar").bounding_box()["width"] <= 390  # type: ignore[index]
        card(page, "10_story_login").click()
        page.wait_for_selector("dialog[open]")
        dialog = page.locator("dialog").bounding_box()
        assert dialog is not None and dialog["width"] <= 390
        page.locator("#story-close").click()
        page.locator("section.column").nth(2).scroll_into_view_if_needed()
        assert card(page, "13_story_xss").is_visible()



class TestLongColumns:
    def test_the_last_card_shown_and_load_more(self, stories: Stories, daemon: DaemonProcess,
                                               browser: object) -> None:
        """A column of 205 stories shows 200; saving the 200th keeps it (it once vanished:
        found by the benchmark); "load more" brings the other five, in order."""
        for n in range(1, 206):
            stories.write("1_backlog", f"{n}_story_s", name=f"story {n}")
        daemon.start()
        daemon.wait_row("205_story_s")
        server = Served(stories, daemon.db)
        try:
            page = open_board(browser, server)
            column = page.locator('section[data-stage="1_backlog"]')
            assert column.locator("article.card").count() == 200
            assert column.locator(".count").inner_text() == "205"
            stories.write("1_backlog", "200_story_s", name="story 200 saved")
            expect(card(page, "200_story_s")).to_contain_text("saved")
            stories.write("1_backlog", "203_story_s", name="story 203 saved")
            column.locator("button.more").click()
            expect(column.locator("article.card")).to_have_count(205)
            ids = [column.locator("article.card").nth(i).get_attribute("data-id")
                   for i in (199, 200, 204)]
            assert ids == ["200_story_s", "201_story_s", "205_story_s"]
            expect(card(page, "203_story_s")).to_contain_text("saved")
        finally:
            server.stop()

    def test_filters_find_cards_beyond_those_shown(self, stories: Stories,
                                                   daemon: DaemonProcess,
                                                   browser: object) -> None:
        """A filter asks the server, not only the 200 cards a column shows: an agent
        whose stories all lie past the 200th, and a word in one name only, are found;
        the count says how many match of how many; clearing brings the column back."""
        for n in range(1, 306):
            agent = "late-agent" if n in (250, 260, 301) else "coder"
            name = "the needle story" if n == 290 else f"story {n}"
            stories.write("1_backlog", f"{n}_story_s", name=name, agent=agent)
        daemon.start()
        daemon.wait_row("305_story_s")
        server = Served(stories, daemon.db)
        try:
            page = open_board(browser, server)
            column = page.locator('section[data-stage="1_backlog"]')
            assert column.locator("article.card").count() == 200
            assert card(page, "250_story_s").count() == 0  # not loaded at first
            page.select_option("#filter-agent", "late-agent")
            expect(column.locator("article.card:visible")).to_have_count(3)
            expect(column.locator(".count")).to_have_text("3 / 305")
            shown = [column.locator("article.card:visible").nth(i).get_attribute("data-id")
                     for i in range(3)]
            assert shown == ["250_story_s", "260_story_s", "301_story_s"]
            page.select_option("#filter-agent", "")
            page.fill("#filter-text", "NEEDLE")
            expect(column.locator("article.card:visible")).to_have_count(1)
            expect(card(page, "290_story_s")).to_be_visible()
            expect(column.locator(".count")).to_have_text("1 / 305")
            stories.write("1_backlog", "299_story_s", name="another needle")
            expect(card(page, "299_story_s")).to_be_visible()  # a live change that matches
            expect(column.locator(".count")).to_have_text("2 / 305")
            page.fill("#filter-text", "")
            expect(column.locator("article.card:visible")).to_have_count(200)
            expect(column.locator(".count")).to_have_text("305")
        finally:
            server.stop()

"""examples/chat, started with the one command of its README, used in two headless Chromium browsers."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
import requests
from selenium.webdriver.common.keys import Keys

from flask_impulse.testing import PushRecorder
from tests.support.browser import Page
from tests.support.server import ROOT, LiveServer

pytestmark = [pytest.mark.live, pytest.mark.browser]

README = ROOT / "examples" / "chat" / "README.md"
COMMAND = "python examples/chat/app.py"


class ChatExample(LiveServer):
    """The example as its README starts it, with ``--port`` for a free port."""

    def command(self) -> list[str]:
        program, *args = shlex.split(COMMAND)
        assert program == "python"
        return [sys.executable, *args, "--port", str(self.port)]


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatExample]:
    assert COMMAND in README.read_text(), "the README no longer starts the example this way"
    with ChatExample(health_path="/realtime/health", name="chat-example") as server:
        yield server


def open_chat(open_page: Callable[..., Page], chat: ChatExample, name: str, room: str | None = None) -> Page:
    page = open_page(chat.url + (f"/?room={room}" if room else "/"), name=name)
    page.wait_for_attribute("#status", "data-state", "live")
    return page


def post_in(page: Page, text: str, author: str | None = None) -> None:
    if author is not None:
        page.find("#author").send_keys(author)
    page.find("#text").send_keys(text)
    page.find("#send").click()


def sign_in(page: Page, name: str) -> None:
    page.find("#author").send_keys(name)
    page.find("#signin").click()
    page.wait_for_attribute("#inbox-status", "data-state", "live")


def notify(page: Page, recipient: str, note: str) -> None:
    page.find("#recipient").send_keys(recipient)
    page.find("#note").send_keys(note)
    page.find("#notify").click()
    page.wait_for_text("#notify-feedback", "Notified 1 open page.")


def test_message_posted_in_one_browser_appears_live_in_another(
    chat: ChatExample, open_page: Callable[..., Page]
) -> None:
    sender = open_chat(open_page, chat, "sender")
    receiver = open_chat(open_page, chat, "receiver")
    text = "Hello from the other window ✓ — 日本語"

    sender.find("#author").send_keys("Ada")
    sender.find("#text").send_keys(text)
    sender.find("#send").click()

    shown = receiver.wait_for_text("#messages .message .text", text)
    message = shown.find_element("xpath", "./ancestor::li[1]")
    assert message.find_element("css selector", ".author").text == "Ada"
    assert message.find_element("css selector", ".time").get_attribute("datetime")
    sender.wait_for_text("#messages .message .text", text)
    sender.wait_for_text("#feedback", "Delivered to 2 open pages.")
    assert sender.find("#text").get_attribute("value") == ""
    assert not receiver.find("#empty").is_displayed()

    # Enter sends, Shift+Enter breaks the line; messages arrive once each, in order.
    sender.find("#text").send_keys("line one", Keys.SHIFT, Keys.ENTER, Keys.NULL, "line two", Keys.ENTER)
    receiver.wait_for_text("#messages .message .text", "line one\nline two")
    assert [element.text for element in receiver.find_all("#messages .text")] == [text, "line one\nline two"]
    assert sender.console_errors() == []
    assert receiver.console_errors() == []


def test_markup_in_a_message_is_shown_as_text(chat: ChatExample, open_page: Callable[..., Page]) -> None:
    page = open_chat(open_page, chat, "reader")
    author = "<i>Mallory</i>"
    text = "<img src=x onerror=\"document.title='owned'\"><b>bold</b> & <script>alert(1)</script>"

    response = requests.post(chat.url + "/messages", json={"author": author, "text": text}, timeout=10)
    assert response.status_code == 201
    assert response.json()["sent"] == 1

    page.wait_for_text("#messages .text", text)
    page.wait_for_text("#messages .author", author)
    assert page.find_all("#messages img, #messages b, #messages i, #messages script") == []
    assert page.driver.title == "flask-impulse chat"


def test_page_shows_why_a_message_was_refused(chat: ChatExample, open_page: Callable[..., Page]) -> None:
    page = open_chat(open_page, chat, "writer")
    page.find("#author").send_keys("x" * 35)
    # The input caps what a person can type; a page script can still send more.
    page.driver.execute_script("document.getElementById('author').removeAttribute('maxlength')")
    page.find("#author").send_keys("y" * 10)
    page.find("#text").send_keys("hello")
    page.find("#send").click()

    page.wait_for_text("#feedback", "Not sent: author may hold at most 40 characters")
    assert page.find("#feedback").get_attribute("class") == "error"
    assert page.find_all("#messages .message") == []


def test_message_posted_in_a_room_appears_in_that_room_only(chat: ChatExample, open_page: Callable[..., Page]) -> None:
    lab_sender = open_chat(open_page, chat, "lab-sender", room="lab")
    lab_reader = open_chat(open_page, chat, "lab-reader", room="lab")
    elsewhere = open_chat(open_page, chat, "elsewhere", room="random")
    assert lab_sender.find("#room").text == "#lab"

    post_in(lab_sender, "only for the lab", author="Ada")
    lab_reader.wait_for_text("#messages .text", "only for the lab")
    lab_sender.wait_for_text("#feedback", "Delivered to 2 open pages.")

    # The other room's stream works: its own later message arrives, and nothing before it.
    post_in(elsewhere, "only for random", author="Bob")
    elsewhere.wait_for_text("#messages .text", "only for random")
    elsewhere.wait_for_text("#feedback", "Delivered to 1 open page.")
    assert [element.text for element in elsewhere.find_all("#messages .text")] == ["only for random"]
    assert [element.text for element in lab_reader.find_all("#messages .text")] == ["only for the lab"]


def test_private_notification_appears_on_the_recipients_page_only(
    chat: ChatExample, open_page: Callable[..., Page]
) -> None:
    ada = open_chat(open_page, chat, "ada")
    bob = open_chat(open_page, chat, "bob")
    sign_in(ada, "Ada")
    sign_in(bob, "Bob")

    notify(ada, "Bob", "psst, Bob <b>only</b>")
    bob.wait_for_text("#notifications .note", "psst, Bob <b>only</b>")
    # Ada's inbox works (Bob's answer arrives) and never held the note meant for Bob.
    notify(bob, "ada", "got it")
    ada.wait_for_text("#notifications .note", "got it")
    assert [element.text for element in ada.find_all("#notifications .from")] == ["Bob"]
    assert [element.text for element in ada.find_all("#notifications .note")] == ["got it"]
    assert [element.text for element in bob.find_all("#notifications .note")] == ["psst, Bob <b>only</b>"]
    assert bob.find_all("#notifications b") == []
    assert ada.console_errors() == []
    assert bob.console_errors() == []


#: What makes a control look like the composer's: a secondary control differing in one is unstyled.
#: (Send's padding differs on purpose: it stretches to the height of the message box.)
BUTTON_LOOK = ("font-family", "font-size", "border-top-width", "border-top-style", "border-top-color",
               "border-top-left-radius", "background-color", "color")  # fmt: skip
FIELD_LOOK = (*BUTTON_LOOK, "padding-top")


def test_secondary_controls_look_like_the_composers(chat: ChatExample, open_page: Callable[..., Page]) -> None:
    page = open_chat(open_page, chat, "styles")
    sign_in(page, "Ada")  # shows the notifier's form

    def look(css: str, properties: tuple[str, ...]) -> dict[str, str]:
        return {name: page.find(css).value_of_css_property(name) for name in properties}

    for button in ("#join button", "#signin", "#notify"):
        assert look(button, BUTTON_LOOK) == look("#send", BUTTON_LOOK), button
    for field in ("#join input", "#recipient", "#note"):
        assert look(field, FIELD_LOOK) == look("#author", FIELD_LOOK), field


ROOM_RULE = "room must be 1 to 32 lowercase letters, digits, '-' or '_', starting with a letter or digit"


@pytest.mark.parametrize("room", ["", "General", "-lab", "a" * 33, "../admin", "lab\n", 7, None])
def test_message_to_an_invalid_room_is_400_with_json_error(chat: ChatExample, room: object) -> None:
    response = requests.post(chat.url + "/messages", json={"text": "hi", "room": room}, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": ROOM_RULE}


def test_page_for_an_invalid_room_is_400_with_json_error(chat: ChatExample) -> None:
    response = requests.get(chat.url + "/", params={"room": "<script>"}, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": ROOM_RULE}


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/session", b"[]", 'send a JSON object: {"name": "..."}'),
        ("/session", b"{}", "name must be a string"),
        ("/session", b'{"name": " "}', "name must not be empty"),
        ("/session", b'{"name": "' + b"x" * 41 + b'"}', "name may hold at most 40 characters"),
        ("/messages", b"not json", 'send a JSON object: {"author": "...", "text": "..."}'),
        ("/messages", b'["a list"]', 'send a JSON object: {"author": "...", "text": "..."}'),
        ("/messages", b"{}", "text must be a string"),
        ("/messages", b'{"text": "   "}', "text must not be empty"),
        ("/messages", b'{"text": 42}', "text must be a string"),
        ("/messages", b'{"text": "hi", "author": ["Ada"]}', "author must be a string"),
        ("/messages", b'{"text": "hi", "author": "Ada\\nLovelace"}', "author must not contain control characters"),
        ("/messages", b'{"text": "bell \\u0007"}', "text must not contain control characters"),
        ("/messages", b'{"text": "' + b"x" * 1001 + b'"}', "text may hold at most 1000 characters"),
    ],
)
def test_invalid_session_or_message_is_400_with_json_error(
    chat: ChatExample, path: str, body: bytes, error: str
) -> None:
    response = requests.post(chat.url + path, data=body, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": error}


def test_notification_needs_a_session_a_valid_body_and_a_known_recipient(chat: ChatExample) -> None:
    url = chat.url + "/notifications"
    anonymous = requests.post(url, json={"to": "Ada", "text": "hi"}, timeout=10)
    assert anonymous.status_code == 401
    assert "error" in anonymous.json()
    forged = requests.post(url, json={"to": "Ada", "text": "hi"}, headers={"Authorization": "Bearer guess"}, timeout=10)
    assert forged.status_code == 401

    token = requests.post(chat.url + "/session", json={"name": "Eve"}, timeout=10).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.post(url, data=b"nope", headers=headers, timeout=10).json() == {
        "error": 'send a JSON object: {"to": "...", "text": "..."}'
    }
    missing_text = requests.post(url, json={"to": "Eve"}, headers=headers, timeout=10)
    assert (missing_text.status_code, missing_text.json()) == (400, {"error": "text must be a string"})
    nobody = requests.post(url, json={"to": "Nobody", "text": "hi"}, headers=headers, timeout=10)
    assert (nobody.status_code, nobody.json()) == (404, {"error": "Nobody has no open session"})
    # A notification to oneself is sent, with no open page to receive it; no token is echoed back.
    to_self = requests.post(url, json={"to": "eve", "text": "note to self"}, headers=headers, timeout=10)
    assert to_self.status_code == 201
    assert to_self.json()["sent"] == 0
    assert token not in to_self.text


def test_body_over_limit_is_413_and_the_chat_keeps_working(chat: ChatExample) -> None:
    response = requests.post(chat.url + "/messages", data=b"x" * (17 * 1024), timeout=10)
    assert response.status_code == 413
    assert response.json() == {"error": "Request Entity Too Large"}

    response = requests.post(chat.url + "/messages", json={"text": "still here\n\twith a tab"}, timeout=10)
    assert response.status_code == 201
    assert response.json()["message"]["text"] == "still here\n\twith a tab"
    assert response.json()["message"]["author"] == "Anonymous"


def test_embedded_push_endpoint_stays_disabled_without_a_secret(chat: ChatExample) -> None:
    response = requests.post(chat.url + "/realtime", json={"channel": "chat:message", "payload": "spoof"}, timeout=10)
    assert response.status_code == 403
    assert response.json()["error"] == "Push endpoint disabled"


# -- the app's pushes, without a server or a browser (flask_impulse.testing) ---------------
@pytest.fixture(scope="module")
def chat_app() -> ModuleType:
    """examples/chat/app.py imported as a module, as its own unit tests would."""
    spec = importlib.util.spec_from_file_location("chat_example_app", ROOT / "examples" / "chat" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.unit
def test_a_posted_message_is_pushed_to_its_room(chat_app: ModuleType, impulse_pushes: PushRecorder) -> None:
    client = chat_app.app.test_client()
    answer = client.post("/messages", json={"author": "Ada", "text": "hello lab", "room": "lab"})
    assert answer.status_code == 201

    push = impulse_pushes.assert_pushed("chat:message", topic="lab", tokens=None)
    assert push.payload == {"author": "Ada", "text": "hello lab", "sentAt": answer.json["message"]["sentAt"]}
    assert push.sent == answer.json["sent"] == 0


@pytest.mark.unit
def test_a_refused_message_is_not_pushed(chat_app: ModuleType, impulse_pushes: PushRecorder) -> None:
    answer = chat_app.app.test_client().post("/messages", json={"author": "x" * 41, "text": "hi"})
    assert answer.status_code == 400
    impulse_pushes.assert_not_pushed()


@pytest.mark.unit
def test_a_notification_is_pushed_to_the_recipients_tokens_only(
    chat_app: ModuleType, impulse_pushes: PushRecorder
) -> None:
    client = chat_app.app.test_client()
    ada = [client.post("/session", json={"name": "Ada"}).json["token"] for _ in range(2)]
    bob = client.post("/session", json={"name": "Bob"}).json["token"]
    answer = client.post(
        "/notifications", json={"to": "Ada", "text": "ping"}, headers={"Authorization": f"Bearer {bob}"}
    )
    assert answer.status_code == 201

    push = impulse_pushes.assert_pushed("notification:new", tokens=ada, count=1)
    assert push.payload["from"] == "Bob" and push.payload["text"] == "ping"
    assert bob not in (push.tokens or ())
    impulse_pushes.assert_not_pushed("chat:message")

// The whole client: a plain EventSource for the room's messages, a second one for this user's
// private notifications, and fetch() to post. User content is only ever set through
// textContent, never parsed as HTML.
"use strict";

const root = document.getElementById("chat");
const channel = root.dataset.channel;
const list = document.getElementById("messages");
const empty = document.getElementById("empty");
const status = document.getElementById("status");
const form = document.getElementById("composer");
const author = document.getElementById("author");
const text = document.getElementById("text");
const feedback = document.getElementById("feedback");
const room = root.dataset.room;

const STATES = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  closed: "Disconnected: reload the page",
};

function setState(state) {
  status.dataset.state = state;
  status.textContent = STATES[state];
}

function element(tag, className, content) {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = content;
  return node;
}

function show(message) {
  const sentAt = new Date(message.sentAt);
  const item = document.createElement("li");
  item.className = "message";
  const meta = element("div", "meta", "");
  meta.append(element("span", "author", message.author));
  const time = element("time", "time", sentAt.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  time.dateTime = message.sentAt;
  meta.append(time);
  item.append(meta, element("p", "text", message.text));
  list.append(item);
  empty.hidden = true;
  item.scrollIntoView({ block: "end" });
}

// The browser reconnects by itself, and sends Last-Event-ID so missed messages are replayed.
const source = new EventSource(root.dataset.streamUrl);
source.onopen = () => setState("live");
source.onerror = () => setState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
source.onmessage = (event) => {
  const { channel: from, payload } = JSON.parse(event.data);
  if (from === channel) show(payload);
};

author.value = localStorage.getItem("chat-author") || "";
author.addEventListener("change", () => localStorage.setItem("chat-author", author.value));

async function postJSON(url, body, headers = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  return answer;
}

function send() {
  return postJSON(root.dataset.postUrl, { author: author.value, text: text.value, room });
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  form.setAttribute("aria-busy", "true");
  try {
    const { sent } = await send();
    text.value = "";
    feedback.className = "";
    feedback.textContent = `Delivered to ${sent} open ${sent === 1 ? "page" : "pages"}.`;
  } catch (error) {
    feedback.className = "error";
    feedback.textContent = `Not sent: ${error.message}`;
  } finally {
    form.removeAttribute("aria-busy");
    text.focus();
  }
});

text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});

// Private notifications. The session's token is this page's own: it subscribes with it and
// proves who sends a notification, and it is kept in memory only, never in storage.
const inboxStatus = document.getElementById("inbox-status");
const signin = document.getElementById("signin");
const notifications = document.getElementById("notifications");
const notifier = document.getElementById("notifier");
const recipient = document.getElementById("recipient");
const note = document.getElementById("note");
const notifyFeedback = document.getElementById("notify-feedback");
let session = null;
let inbox = null;

function setInboxState(state, label) {
  inboxStatus.dataset.state = state;
  inboxStatus.textContent = label;
}

function showNotification(notification) {
  const item = document.createElement("li");
  item.className = "notification";
  item.append(element("span", "from", notification.from), element("span", "note", notification.text));
  notifications.append(item);
}

function report(node, error, message) {
  node.className = error ? "error" : "";
  node.textContent = message;
}

signin.addEventListener("click", async () => {
  try {
    session = await postJSON(root.dataset.sessionUrl, { name: author.value });
  } catch (error) {
    report(notifyFeedback, true, `Not signed in: ${error.message}`);
    return;
  }
  if (inbox) inbox.close();
  const url = new URL(root.dataset.notificationStreamUrl, location.href);
  url.searchParams.set("token", session.token);
  inbox = new EventSource(url);
  inbox.onopen = () => setInboxState("live", `Signed in as ${session.name}`);
  inbox.onerror = () => setInboxState("reconnecting", "Reconnecting…");
  inbox.onmessage = (event) => {
    const { channel: from, payload } = JSON.parse(event.data);
    if (from === root.dataset.notificationChannel) showNotification(payload);
  };
  notifier.hidden = false;
  report(notifyFeedback, false, "");
});

notifier.addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const { sent } = await postJSON(
      root.dataset.notifyUrl,
      { to: recipient.value, text: note.value },
      { Authorization: `Bearer ${session.token}` },
    );
    note.value = "";
    report(notifyFeedback, false, `Notified ${sent} open ${sent === 1 ? "page" : "pages"}.`);
  } catch (error) {
    report(notifyFeedback, true, `Not sent: ${error.message}`);
  }
});

// The whole client: a plain EventSource for live messages, fetch() to post one.
// User content is only ever set through textContent, never parsed as HTML.
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

async function send() {
  const response = await fetch(root.dataset.postUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ author: author.value, text: text.value }),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  return answer;
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

// strato dashboard: progressive enhancement only; every page works as plain HTML forms.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// <form data-confirm="Delete server x?">: ask before a destructive action.
document.addEventListener("submit", (event) => {
  const text = event.target.getAttribute("data-confirm");
  if (text && !window.confirm(text)) event.preventDefault();
});

// <div data-poll="/dashboard/.../progress" data-poll-done-reload>: live progress of a
// long operation. The URL answers {"status": "...", "percent": 0-100|null, "done": bool,
// "text": "..."}; children [data-poll-text] and <progress> are updated until done.
function startPolling(el) {
  const url = el.getAttribute("data-poll");
  const text = el.querySelector("[data-poll-text]");
  const bar = el.querySelector("progress");
  const tick = async () => {
    let data;
    try {
      const answer = await fetch(url, {headers: {"Accept": "application/json"},
                                       credentials: "same-origin"});
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      data = await answer.json();
    } catch (err) {
      if (text) text.textContent = "progress unavailable (" + err.message + ")";
      setTimeout(tick, 3000);
      return;
    }
    if (text) text.textContent = data.text || data.status;
    el.setAttribute("data-status", data.status);
    if (bar) {
      if (data.percent === null || data.percent === undefined) bar.removeAttribute("value");
      else bar.value = data.percent;
    }
    if (data.done) {
      el.setAttribute("data-done", "true");
      if (el.hasAttribute("data-poll-done-reload")) window.location.reload();
      return;
    }
    setTimeout(tick, 1000);
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-poll]").forEach(startPolling);
});

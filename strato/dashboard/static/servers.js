// strato dashboard, servers: the create form shows only the select of the chosen boot
// source (without this script every select shows; the server uses the chosen one), and
// the console log opens at its newest line.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const source = document.getElementById("boot-source");
  if (source) {
    const show = () => {
      document.querySelectorAll("[data-source]").forEach((field) => {
        field.hidden = field.getAttribute("data-source") !== source.value;
      });
    };
    source.addEventListener("change", show);
    show();
  }
  const log = document.getElementById("console-log");
  if (log) log.scrollTop = log.scrollHeight;
});

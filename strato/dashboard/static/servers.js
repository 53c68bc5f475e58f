// strato dashboard, servers: the create form shows only the select of the chosen boot
// source (without this script every select shows; the server uses the chosen one).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const source = document.getElementById("boot-source");
  if (!source) return;
  const show = () => {
    document.querySelectorAll("[data-source]").forEach((field) => {
      field.hidden = field.getAttribute("data-source") !== source.value;
    });
  };
  source.addEventListener("change", show);
  show();
});

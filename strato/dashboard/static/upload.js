// strato dashboard: image upload with a real progress bar.
// 1. POST /dashboard/images (JSON, X-CSRF-Token) creates the queued record;
// 2. XHR PUT /dashboard/images/{id}/file sends the file itself (the server streams it
//    into Glance, never holding it whole), upload.onprogress drives the bar;
// 3. on success the browser goes to the image's page.
// On a queued image's own page the form carries data-upload (the record exists): step 1
// is skipped.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const button = document.getElementById("upload-submit");
  const token = () => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  };
  const say = (text) => { status.textContent = text; };
  const human = (n) => {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = document.getElementById("image-file").files[0];
    if (!file) { say("Error: choose a file first."); return; }
    button.disabled = true;
    bar.value = 0;
    let created;
    if (form.hasAttribute("data-upload")) {
      created = {upload: form.getAttribute("data-upload"), page: form.getAttribute("data-page")};
    } else {
      say("Creating the image record…");
      try {
        const answer = await fetch("/dashboard/images", {
          method: "POST", credentials: "same-origin",
          headers: {"Content-Type": "application/json", "Accept": "application/json",
                    "X-CSRF-Token": token()},
          body: JSON.stringify({name: document.getElementById("image-name").value,
                                disk_format: document.getElementById("disk-format").value}),
        });
        created = await answer.json();
        if (!answer.ok) throw new Error(created.error || ("HTTP " + answer.status));
      } catch (err) {
        say("Error: " + err.message);
        button.disabled = false;
        return;
      }
    }
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", created.upload);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("X-CSRF-Token", token());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) {
        bar.value = Math.floor((e.loaded / e.total) * 100);
        say("Uploading: " + human(e.loaded) + " of " + human(e.total) + " (" + bar.value + "%)");
      } else {
        bar.removeAttribute("value");
        say("Uploading: " + human(e.loaded));
      }
    };
    xhr.upload.onload = () => { bar.value = 100; say("Uploaded; the image is being checked and stored…"); };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        say("Done.");
        window.location.assign(created.page);
        return;
      }
      let message = "HTTP " + xhr.status;
      try { message = JSON.parse(xhr.responseText).error || message; } catch (e) { /* keep */ }
      say("Error: " + message + " (the image record stays queued: ");
      const link = document.createElement("a");
      link.href = created.page;
      link.textContent = "open it";
      status.appendChild(link);
      status.appendChild(document.createTextNode(")"));
      button.disabled = false;
    };
    xhr.onerror = () => { say("Error: the upload was interrupted."); button.disabled = false; };
    say("Uploading…");
    xhr.send(file);
  });
});

// Live updates (SSE) and agent assist. No inline scripts: the page's CSP allows only this file.
"use strict";

function liveRegion(section) {
  const source = section.dataset.live;
  const refresh = section.dataset.refresh;
  if (!source || !refresh || !window.EventSource) return;
  let pending = false;
  async function reload() {
    if (pending) return;
    pending = true;
    try {
      const answer = await fetch(refresh, { credentials: "same-origin" });
      if (answer.ok) {
        section.innerHTML = await answer.text();
        section.dispatchEvent(new CustomEvent("refreshed"));
      }
    } finally {
      pending = false;
    }
  }
  const events = new EventSource(source, { withCredentials: true });
  events.addEventListener("queue", (e) => {
    const counts = JSON.parse(e.data);
    for (const [name, value] of Object.entries(counts)) {
      const badge = document.querySelector(`[data-count="${name}"]`);
      if (badge) badge.textContent = value;
    }
    reload();
  });
  events.addEventListener("conversation", reload);
}

function scrollTranscript() {
  const transcript = document.querySelector("#transcript");
  if (transcript) transcript.scrollTop = transcript.scrollHeight;
}

function assist() {
  const button = document.querySelector("#suggest");
  const box = document.querySelector("#suggestion");
  const reply = document.querySelector("#reply-text");
  if (!button || !box || !reply) return;
  button.addEventListener("click", async () => {
    button.disabled = true;
    box.hidden = false;
    box.textContent = "Looking in the help centre…";
    try {
      const answer = await fetch(button.dataset.url, { credentials: "same-origin" });
      const data = await answer.json();
      box.textContent = "";
      if (!answer.ok || !data.text) {
        box.textContent = data.error || "The help centre has no answer to the customer's last question.";
        return;
      }
      const text = document.createElement("p");
      text.textContent = data.text;
      const sources = document.createElement("p");
      sources.className = "muted";
      sources.textContent = "Sources: " + data.sources.map((s) => s.section || s.title).join(" · ");
      const use = document.createElement("button");
      use.type = "button";
      use.id = "use-suggestion";
      use.textContent = "Use this answer (edit before sending)";
      use.addEventListener("click", () => { reply.value = data.text; reply.focus(); });
      box.append(text, sources, use);
    } catch (error) {
      box.textContent = "The help centre could not be reached.";
    } finally {
      button.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(liveRegion);
  const transcript = document.querySelector("#transcript");
  if (transcript) transcript.addEventListener("refreshed", scrollTranscript);
  scrollTranscript();
  assist();
});

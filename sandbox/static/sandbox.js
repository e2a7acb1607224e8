// The sandbox chat page: plays the customer, renders what the bot sends the WhatsApp way.
"use strict";

const state = { phone: "", name: "", seq: 0, byId: new Map(), polling: 0 };
const $ = (id) => document.getElementById(id);

function ticks(status) {
  if (status === "failed") return '<span class="ticks failed" title="not delivered">!</span>';
  if (status === "read") return '<span class="ticks read" title="read">✓✓</span>';
  if (status === "delivered") return '<span class="ticks" title="delivered">✓✓</span>';
  if (status === "sent") return '<span class="ticks" title="sent">✓</span>';
  return '<span class="ticks" title="sending">🕓</span>';
}

function textNode(text) {
  const div = document.createElement("div");
  div.className = "text";
  div.textContent = text || "";
  return div;
}

function button(label, onClick, cls = "reply-button") {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

function renderOutgoing(payload, bubble) {
  const type = payload.type;
  if (type === "text") {
    bubble.appendChild(textNode(payload.text && payload.text.body));
  } else if (type === "interactive") {
    const inter = payload.interactive || {};
    bubble.appendChild(textNode(inter.body && inter.body.text));
    const actions = document.createElement("div");
    actions.className = "actions";
    if (inter.type === "button") {
      for (const b of (inter.action && inter.action.buttons) || []) {
        const reply = b.reply || {};
        actions.appendChild(button(reply.title, () => sendReply("button_reply", reply.id, reply.title)));
      }
    } else if (inter.type === "list") {
      const label = (inter.action && inter.action.button) || "Choose";
      actions.appendChild(button("☰ " + label, () => openList(inter)));
    }
    bubble.appendChild(actions);
  } else if (type === "image") {
    const img = document.createElement("img");
    img.src = payload.image.link || "";
    img.alt = payload.image.caption || "image";
    bubble.appendChild(img);
    if (payload.image.caption) bubble.appendChild(textNode(payload.image.caption));
  } else if (type === "document") {
    const a = document.createElement("a");
    a.href = payload.document.link || "#";
    a.textContent = "📄 " + (payload.document.filename || "document");
    a.target = "_blank";
    bubble.appendChild(a);
  } else if (type === "template") {
    bubble.appendChild(textNode("[template: " + ((payload.template && payload.template.name) || "?") + "]"));
  } else {
    bubble.appendChild(textNode("[" + type + " message]"));
  }
}

function render(message) {
  let bubble = state.byId.get(message.id);
  const fresh = !bubble;
  if (fresh) {
    bubble = document.createElement("div");
    bubble.dataset.id = message.id;
    state.byId.set(message.id, bubble);
  }
  bubble.className = "bubble " + (message.direction === "in" ? "mine" : "theirs");
  bubble.dataset.status = message.status;
  bubble.replaceChildren();
  if (message.direction === "in") {
    const p = message.payload;
    bubble.appendChild(textNode(p.text !== undefined ? p.text : (p.reply && p.reply.title)));
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.innerHTML = ticks(message.status);
    if (message.error) meta.title = message.error;
    bubble.appendChild(meta);
  } else {
    renderOutgoing(message.payload, bubble);
  }
  if (fresh) {
    $("chat").appendChild(bubble);
    $("chat").scrollTop = $("chat").scrollHeight;
  }
}

function openList(inter) {
  const rows = $("list-rows");
  rows.replaceChildren();
  $("list-title").textContent = (inter.body && inter.body.text) || "Choose";
  for (const section of (inter.action && inter.action.sections) || []) {
    for (const row of section.rows || []) {
      const b = button(row.title, () => { $("list-dialog").close(); sendReply("list_reply", row.id, row.title); },
                       "list-row");
      if (row.description) {
        const d = document.createElement("small");
        d.textContent = row.description;
        b.appendChild(d);
      }
      rows.appendChild(b);
    }
  }
  $("list-dialog").showModal();
}

async function post(body) {
  const answer = await fetch("/api/send", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ phone: state.phone, name: state.name, ...body }),
  });
  const message = await answer.json();
  if (message.id) render(message);
  else alert(message.error || "could not send");
}

function sendReply(type, id, title) { return post({ reply: { type, id, title } }); }

async function poll(generation) {
  while (generation === state.polling) {
    try {
      const url = `/api/messages?phone=${encodeURIComponent(state.phone)}&since=${state.seq}&wait=20`;
      const data = await (await fetch(url)).json();
      if (generation !== state.polling) return;
      for (const m of data.messages) render(m);
      state.seq = Math.max(state.seq, data.seq || 0);
      $("typing").hidden = !data.typing;
    } catch (e) {
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

function openChat() {
  state.phone = $("phone").value.replace(/\D/g, "");
  state.name = $("name").value.trim() || "Sandbox customer";
  state.seq = 0;
  state.byId.clear();
  $("chat").replaceChildren();
  $("subtitle").textContent = `chatting as +${state.phone} (${state.name})`;
  state.polling += 1;
  poll(state.polling);
}

$("identity").addEventListener("submit", (e) => { e.preventDefault(); openChat(); });
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  post({ text });
});
openChat();

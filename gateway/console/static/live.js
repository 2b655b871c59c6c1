// The live view: the calls in progress and their transcripts as they grow (server-sent events from
// /console/live/events), and a hang-up button per call (confirmed, then POSTed with the CSRF token).
// With several gateway processes every call and snapshot names its process: a snapshot replaces that
// process's calls, and a hang-up is POSTed to the path routed to the process that holds the call.
"use strict";
(function () {
  const root = document.getElementById("live-calls");
  const none = document.getElementById("no-calls");
  const status = document.getElementById("live-status");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const processes = Number(root.dataset.processes || "1");
  const absent = new Set(); // processes that cannot be read for now

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function addLine(list, line) {
    const item = el("li", { class: "line " + line.role });
    item.append(el("span", { class: "role-" + line.role }, line.role + ": "), el("span", { class: "text" }, line.text));
    list.append(item);
    list.scrollTop = list.scrollHeight;
  }

  function addCall(call) {
    if (document.getElementById("call-" + call.call_sid)) return;
    const box = el("section", {
      class: "live-call", id: "call-" + call.call_sid, "data-sid": call.call_sid, "data-process": call.process || 0,
    });
    const head = el("header");
    const who = el("div", { class: "who" });
    const link = el("a", { href: "/console/calls/" + encodeURIComponent(call.call_sid) }, call.call_sid);
    who.append(link, document.createTextNode(`  ${call.caller || "?"} → ${call.called || "?"} (${call.carrier}), since ${new Date(call.started_at).toISOString().slice(11, 19)} UTC`));
    const button = el("button", { class: "danger hang-up", type: "button" }, "Hang up");
    button.addEventListener("click", () => hangUp(call.call_sid, call.process || 0, button));
    head.append(who, button);
    const list = el("ol", { class: "transcript" });
    for (const line of call.lines) addLine(list, line);
    box.append(head, list);
    root.append(box);
    none.hidden = true;
  }

  function endCall(sid, outcome) {
    const box = document.getElementById("call-" + sid);
    if (!box) return;
    box.classList.add("ended");
    const button = box.querySelector("button.hang-up");
    button.disabled = true;
    button.textContent = "ended: " + outcome;
    setTimeout(() => { box.remove(); none.hidden = root.querySelector(".live-call") !== null; }, 5000);
  }

  async function hangUp(sid, process, button) {
    if (!window.confirm(`Hang up call ${sid}? The caller is disconnected at once.`)) return;
    button.disabled = true;
    const routed = processes > 1 ? `/process-${process}` : "";
    let response;
    try {
      response = await fetch(`/console/calls/${encodeURIComponent(sid)}/hangup${routed}`, {
        method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin",
      });
    } catch (error) {
      button.disabled = false;
      window.alert("Not hung up: the gateway could not be reached.");
      return;
    }
    if (!response.ok) {
      button.disabled = false;
      const answer = await response.json().catch(() => ({}));
      window.alert("Not hung up: " + (answer.error || response.status));
    } else if (!button.closest(".live-call").classList.contains("ended")) {
      button.textContent = "hanging up…"; // unless its end was told before this answer
    }
  }

  function showStatus(connected) {
    if (!connected) status.textContent = "reconnecting…";
    else if (absent.size) status.textContent = `live; process ${[...absent].join(", ")} not answering (restarting?)`;
    else status.textContent = "live";
  }

  const source = new EventSource("/console/live/events");
  source.onopen = () => showStatus(true);
  source.onerror = () => showStatus(false);
  source.onmessage = (message) => {
    const news = JSON.parse(message.data);
    if (news.type === "snapshot") {
      const process = news.process || 0;
      root.querySelectorAll(`.live-call[data-process="${process}"]`).forEach((box) => box.remove());
      news.calls.forEach(addCall);
      none.hidden = root.querySelector(".live-call") !== null;
      if (news.absent) absent.add(process); else absent.delete(process);
      showStatus(true);
    } else if (news.type === "started") {
      addCall(news.call);
    } else if (news.type === "line") {
      const box = document.getElementById("call-" + news.call_sid);
      if (box) addLine(box.querySelector("ol"), news);
    } else if (news.type === "ended") {
      endCall(news.call_sid, news.outcome);
    }
  };
})();

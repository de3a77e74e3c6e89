// HessGPT web chat. Talks to POST /v1/chat/events (the server's Event stream as SSE).
// Security: every piece of model output goes through marked -> DOMPurify before innerHTML, or is set with
// textContent; HTML artifacts are previewed in <iframe sandbox="" srcdoc> (no scripts, opaque origin); the
// page's CSP refuses inline scripts as a second wall.
"use strict";

const I18N = {
  en: {
    newChat: "New chat", settings: "Settings", send: "Send", stop: "Stop", regenerate: "Regenerate",
    copy: "Copy", copied: "Copied", placeholder: "Message HessGPT…", emptyTitle: "How can I help?",
    emptyHint: "Ask in French or English. Code runs in a sandbox; its steps show up here.",
    disclaimer: "HessGPT is a small model and makes mistakes.", systemPrompt: "System prompt",
    temperature: "Temperature", maxTokens: "Max tokens", apiKey: "API key (only if the server needs one)",
    close: "Close", clearAll: "Delete all chats", untitled: "New chat", code: "Code", refined: "Refined code", refineSkipped: "Model 2 not asked", notUsed: "not used",
    result: "Result", artifact: "HTML preview", source: "Source", toolCall: "Function call", search: "Search",
    toolResult: "Function result", stopped: "stopped", thinking: "Generating…", errorPrefix: "Error",
    del: "Delete", confirmClear: "Delete all conversations?", length: "cut: max tokens reached",
    modelDefaults: "Use the model's defaults", modelDefault: "model's default",
  },
  fr: {
    newChat: "Nouvelle discussion", settings: "Réglages", send: "Envoyer", stop: "Arrêter", regenerate: "Régénérer",
    copy: "Copier", copied: "Copié", placeholder: "Écrire à HessGPT…", emptyTitle: "Comment puis-je aider ?",
    emptyHint: "Posez vos questions en français ou en anglais. Le code s'exécute dans un bac à sable ; ses étapes s'affichent ici.",
    disclaimer: "HessGPT est un petit modèle et se trompe parfois.", systemPrompt: "Prompt système",
    temperature: "Température", maxTokens: "Jetons max", apiKey: "Clé d'API (seulement si le serveur en demande une)",
    close: "Fermer", clearAll: "Supprimer toutes les discussions", untitled: "Nouvelle discussion", code: "Code",
    refined: "Code corrigé", refineSkipped: "Modèle 2 non sollicité", notUsed: "non retenu", result: "Résultat", artifact: "Aperçu HTML", source: "Source", toolCall: "Appel de fonction",
    search: "Recherche", toolResult: "Résultat de fonction", stopped: "arrêté", thinking: "Génération…",
    errorPrefix: "Erreur", del: "Supprimer", confirmClear: "Supprimer toutes les discussions ?",
    length: "coupé : limite de jetons atteinte",
    modelDefaults: "Réglages du modèle par défaut", modelDefault: "défaut du modèle",
  },
};

const KEY = { convs: "hessgpt.conversations", current: "hessgpt.current", settings: "hessgpt.settings", lang: "hessgpt.lang" };
// Sampling left null = not sent: the server uses the checkpoint's generation_config.json (greedy for HessGPT).
const DEFAULTS = { v: 2, system: "", temperature: null, top_p: null, max_tokens: null, api_key: "" };
const SAMPLING = ["temperature", "top_p", "max_tokens"];

const $ = (id) => document.getElementById(id);
const state = {
  lang: localStorage.getItem(KEY.lang) || ((navigator.language || "en").startsWith("fr") ? "fr" : "en"),
  convs: loadJSON(KEY.convs, []),
  currentId: localStorage.getItem(KEY.current),
  settings: loadSettings(),
  model: null,
  modelDefaults: {},  // the server's defaults for a request that sets nothing (GET /v1/models generation_config)
  abort: null,
};

function loadJSON(key, fallback) {
  try { const v = JSON.parse(localStorage.getItem(key)); return v ?? fallback; } catch { return fallback; }
}
function loadSettings() {
  const stored = loadJSON(KEY.settings, {}) || {};
  // settings saved before v2 hold the old fixed defaults (temperature 0.7, top_p 0.95): drop them
  if (stored.v !== 2) for (const k of SAMPLING) delete stored[k];
  return Object.assign({}, DEFAULTS, stored, { v: 2 });
}
function samplingFields(settings) {
  // only what the user set: the rest is the checkpoint's recommendation
  const out = {};
  for (const k of SAMPLING) {
    const v = settings[k];
    if (v !== null && v !== undefined && v !== "" && Number.isFinite(Number(v))) out[k] = Number(v);
  }
  return out;
}
function save() {
  localStorage.setItem(KEY.convs, JSON.stringify(state.convs));
  if (state.currentId) localStorage.setItem(KEY.current, state.currentId); else localStorage.removeItem(KEY.current);
  localStorage.setItem(KEY.settings, JSON.stringify(state.settings));
  localStorage.setItem(KEY.lang, state.lang);
}
const t = (k) => (I18N[state.lang] && I18N[state.lang][k]) || I18N.en[k] || k;
const current = () => state.convs.find((c) => c.id === state.currentId) || null;
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; };

// ---------------------------------------------------------------- Markdown, sanitised
function setupMarkdown() {
  marked.setOptions({ gfm: true, breaks: true });
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") { node.setAttribute("target", "_blank"); node.setAttribute("rel", "noopener noreferrer"); }
  });
}
function renderMarkdown(target, text) {
  const html = DOMPurify.sanitize(marked.parse(text), { FORBID_TAGS: ["style", "form", "input", "button", "iframe"], FORBID_ATTR: ["style"] });
  target.innerHTML = html;
  target.querySelectorAll("pre code").forEach((code) => {
    hljs.highlightElement(code);
    const pre = code.parentElement;
    pre.appendChild(copyButton(() => code.textContent));
  });
}
function codeBlock(text, lang) {
  const pre = el("pre"), code = el("code", lang ? "language-" + lang : "", text);
  pre.appendChild(code);
  if (lang && hljs.getLanguage(lang)) hljs.highlightElement(code);
  pre.appendChild(copyButton(() => text));
  return pre;
}
function copyButton(getText) {
  const b = el("button", "copy", t("copy"));
  b.type = "button";
  b.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(getText()); b.textContent = t("copied"); setTimeout(() => (b.textContent = t("copy")), 1200); } catch { /* no clipboard */ }
  });
  return b;
}

// ---------------------------------------------------------------- rendering a message
// An assistant message keeps its parts in order: {kind: "text"|"code"|"refined_code"|"result"|"artifact"|"tool_call"|"tool_result"|"search", text, data}
// Its text as history (and for Copy): the text before the tool steps + "\n\n" + the text after them, without
// code or results — the way the eval and training render an earlier turn (one plain assistant message).
function assistantText(msg) {
  const segments = [];
  let cur = "";
  for (const p of msg.parts) {
    if (p.kind === "text") { cur += p.text; continue; }
    segments.push(cur); cur = "";
  }
  segments.push(cur);
  return segments.map((s) => s.trim()).filter((s) => s).join("\n\n");
}

function renderParts(body, msg) {
  body.textContent = "";
  let textBuf = "";
  const flush = () => { if (textBuf) { const d = el("div", "md"); renderMarkdown(d, textBuf); body.appendChild(d); textBuf = ""; } };
  for (const p of msg.parts) {
    if (p.kind === "text") { textBuf += p.text; continue; }
    flush();
    body.appendChild(renderStep(p));
  }
  flush();
}

function renderStep(p) {
  if (p.kind === "artifact") {
    const card = el("div", "step artifact");
    const head = el("div", "step-head");
    head.appendChild(el("span", "badge art", t("artifact")));
    const toggle = el("button", "ghost small", t("source")); toggle.type = "button";
    head.appendChild(toggle);
    card.appendChild(head);
    const frame = document.createElement("iframe");
    frame.setAttribute("sandbox", "");  // no scripts, no same-origin, no forms, no popups
    frame.setAttribute("referrerpolicy", "no-referrer");
    frame.srcdoc = p.text;
    frame.title = t("artifact");
    card.appendChild(frame);
    const src = codeBlock(p.text, "html"); src.hidden = true;
    card.appendChild(src);
    toggle.addEventListener("click", () => { src.hidden = !src.hidden; });
    return card;
  }
  const det = document.createElement("details");
  det.className = "step " + p.kind;
  det.open = true;
  const sum = el("summary");
  const labels = { code: t("code"), refined_code: t("refined"), refine_skipped: t("refineSkipped"), result: t("result"), tool_call: t("toolCall"), tool_result: t("toolResult"), search: t("search") };
  sum.appendChild(el("span", "badge " + p.kind, labels[p.kind] || p.kind));
  if (p.kind === "result" && p.data && p.data.status) {
    sum.appendChild(el("span", "status-pill " + (p.data.status === "ok" ? "ok" : "bad"), p.data.status));
    if (p.data.duration_ms != null) sum.appendChild(el("span", "muted", p.data.duration_ms + " ms"));
  }
  if (p.kind === "refined_code" && p.data && p.data.reason) {  // why model 2 was asked; whether its program is used
    sum.appendChild(el("span", "muted", p.data.reason + (p.data.detail ? ": " + p.data.detail : "")));
    if (p.data.used === false) sum.appendChild(el("span", "status-pill bad", t("notUsed") + (p.data.verdict ? " (" + p.data.verdict + ")" : "")));
  }
  det.appendChild(sum);
  if (p.kind === "tool_call") det.appendChild(codeBlock(JSON.stringify({ name: p.data.name, arguments: p.data.arguments }, null, 2), "json"));
  else if (p.kind === "code" || p.kind === "refined_code") det.appendChild(codeBlock(p.text, (p.data && p.data.lang) || "python"));
  else { const pre = el("pre", "output"); pre.textContent = p.text; det.appendChild(pre); }
  return det;
}

function renderMessage(msg, idx, isLast) {
  const row = el("div", "msg " + msg.role);
  row.dataset.index = idx;
  const body = el("div", "body");
  if (msg.role === "user") body.textContent = msg.content;
  else renderParts(body, msg);
  row.appendChild(body);
  if (msg.role === "assistant") {
    const foot = el("div", "msg-foot");
    if (msg.finish && msg.finish !== "stop") foot.appendChild(el("span", "muted", msg.finish === "cancelled" ? t("stopped") : msg.finish === "length" ? t("length") : msg.finish));
    if (msg.error) foot.appendChild(el("span", "error", t("errorPrefix") + ": " + msg.error));
    foot.appendChild(copyButton(() => assistantText(msg)));
    if (isLast) {
      const regen = el("button", "ghost small regenerate", t("regenerate")); regen.type = "button";
      regen.addEventListener("click", regenerate);
      foot.appendChild(regen);
    }
    row.appendChild(foot);
  }
  return row;
}

function renderConversation() {
  const box = $("messages");
  box.querySelectorAll(".msg").forEach((n) => n.remove());
  const conv = current();
  const msgs = conv ? conv.messages : [];
  $("empty").hidden = msgs.length > 0;
  msgs.forEach((m, i) => box.appendChild(renderMessage(m, i, i === msgs.length - 1 && !state.abort)));
  box.scrollTop = box.scrollHeight;
}

function renderSidebar() {
  const nav = $("conversations");
  nav.textContent = "";
  for (const c of [...state.convs].sort((a, b) => b.updated - a.updated)) {
    const item = el("div", "conv" + (c.id === state.currentId ? " active" : ""));
    const title = el("button", "conv-title", c.title || t("untitled")); title.type = "button";
    title.addEventListener("click", () => { if (state.abort) return; state.currentId = c.id; save(); renderAll(); });
    const del = el("button", "conv-del", "×"); del.type = "button"; del.title = t("del");
    del.addEventListener("click", () => {
      if (state.abort) return;
      state.convs = state.convs.filter((x) => x.id !== c.id);
      if (state.currentId === c.id) state.currentId = null;
      save(); renderAll();
    });
    item.append(title, del);
    nav.appendChild(item);
  }
}

function applyI18n() {
  document.documentElement.lang = state.lang;
  document.querySelectorAll("[data-i18n]").forEach((n) => (n.textContent = t(n.dataset.i18n)));
  document.querySelectorAll("[data-i18n-placeholder]").forEach((n) => (n.placeholder = t(n.dataset.i18nPlaceholder)));
  $("lang-en").classList.toggle("on", state.lang === "en");
  $("lang-fr").classList.toggle("on", state.lang === "fr");
}

function renderAll() { applyI18n(); renderSidebar(); renderConversation(); }

// ---------------------------------------------------------------- talking to the server
function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.settings.api_key) h.Authorization = "Bearer " + state.settings.api_key;
  return h;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const j = await r.json();
    if (!r.ok) throw new Error((j.error && j.error.message) || r.status);
    state.model = j.data[0].id;
    state.modelDefaults = j.data[0].generation_config || {};
    showSampling();
    $("model-name").textContent = state.model;
  } catch (e) {
    $("model-name").textContent = "HessGPT";
    setStatus(t("errorPrefix") + ": " + e.message, true);
  }
}

function setStatus(text, bad) { const s = $("status"); s.textContent = text || ""; s.classList.toggle("bad", !!bad); }

function apiMessages(conv) {
  const out = [];
  if (state.settings.system.trim()) out.push({ role: "system", content: state.settings.system });
  for (const m of conv.messages) {
    if (m.role === "user") out.push({ role: "user", content: m.content });
    else if (!m.error || assistantText(m)) out.push({ role: "assistant", content: assistantText(m) });
  }
  return out;
}

async function generate(conv) {
  const msg = { role: "assistant", parts: [], finish: null };
  conv.messages.push(msg);
  const idx = conv.messages.length - 1;
  const box = $("messages");
  const body = Object.assign({ model: state.model, messages: apiMessages({ messages: conv.messages.slice(0, -1) }), stream: true },
    samplingFields(state.settings));
  state.abort = new AbortController();
  setBusy(true);
  let row = renderMessage(msg, idx, false);
  box.appendChild(row);
  $("empty").hidden = true;
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
      renderParts(row.querySelector(".body"), msg);
      if (stick) box.scrollTop = box.scrollHeight;
    });
  };
  try {
    const r = await fetch("/v1/chat/events", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.abort.signal });
    if (!r.ok) {
      let m = String(r.status);
      try { const j = await r.json(); m = (j.error && j.error.message) || m; } catch { /* not JSON */ }
      throw new Error(m);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, cut); buf = buf.slice(cut + 2);
        for (const line of frame.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          onEvent(msg, JSON.parse(data));
        }
      }
      redraw();
    }
  } catch (e) {
    if (e.name === "AbortError") msg.finish = "cancelled";
    else msg.error = e.message;
  } finally {
    state.abort = null;
    setBusy(false);
    conv.updated = Date.now();
    save();
    renderConversation();
  }
}

function onEvent(msg, ev) {
  if (ev.type === "text") {
    const last = msg.parts[msg.parts.length - 1];
    if (last && last.kind === "text") last.text += ev.text; else msg.parts.push({ kind: "text", text: ev.text });
  } else if (ev.type === "done") {
    msg.finish = ev.data.finish_reason;
    msg.usage = { prompt: ev.data.prompt_tokens, completion: ev.data.completion_tokens };
  } else if (ev.type === "error") {
    msg.error = ev.text;
  } else {
    msg.parts.push({ kind: ev.type, text: ev.text, data: ev.data || {} });
  }
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  setStatus(busy ? t("thinking") : "");
  document.body.classList.toggle("busy", busy);
}

function newConversation() {
  const conv = { id: "c" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: "", messages: [], updated: Date.now() };
  state.convs.push(conv);
  state.currentId = conv.id;
  return conv;
}

async function send(text) {
  if (state.abort || !text.trim()) return;
  if (!state.model) await loadModel();
  const conv = current() || newConversation();
  if (!conv.title) conv.title = text.trim().slice(0, 48);
  conv.messages.push({ role: "user", content: text });
  conv.updated = Date.now();
  save();
  renderAll();
  await generate(conv);
}

async function regenerate() {
  const conv = current();
  if (state.abort || !conv || !conv.messages.length) return;
  if (conv.messages[conv.messages.length - 1].role === "assistant") conv.messages.pop();
  renderConversation();
  await generate(conv);
}

// ---------------------------------------------------------------- wiring
// The sampling inputs show the user's value, or the model's default (marked as such) while it is unset.
function showSampling() {
  const s = state.settings, d = state.modelDefaults || {};
  const shown = (k, fallback) => (s[k] !== null && s[k] !== undefined && s[k] !== "" ? Number(s[k]) : (d[k] ?? fallback));
  const mark = (k) => (s[k] === null || s[k] === undefined || s[k] === "" ? " (" + t("modelDefault") + ")" : "");
  $("set-temp").value = shown("temperature", 0);
  $("set-topp").value = shown("top_p", 1);
  $("set-maxtok").value = s.max_tokens ?? "";
  $("set-maxtok").placeholder = d.max_tokens != null ? String(d.max_tokens) : "";
  $("out-temp").textContent = Number(shown("temperature", 0)).toFixed(2) + mark("temperature");
  $("out-topp").textContent = Number(shown("top_p", 1)).toFixed(2) + mark("top_p");
}

function initSettings() {
  const s = state.settings, dlg = $("settings");
  const fields = [["set-system", "system"], ["set-temp", "temperature"], ["set-topp", "top_p"], ["set-maxtok", "max_tokens"], ["set-key", "api_key"]];
  for (const [id, k] of fields) {
    if (!SAMPLING.includes(k)) $(id).value = s[k];
    $(id).addEventListener("input", () => { s[k] = SAMPLING.includes(k) && $(id).value === "" ? null : $(id).value; showSampling(); save(); });
  }
  $("reset-sampling").addEventListener("click", () => { for (const k of SAMPLING) s[k] = null; showSampling(); save(); });
  showSampling();
  $("open-settings").addEventListener("click", () => dlg.showModal());
  dlg.addEventListener("close", () => loadModel());
  $("clear-all").addEventListener("click", () => {
    if (!confirm(t("confirmClear"))) return;
    state.convs = []; state.currentId = null; save(); renderAll(); dlg.close();
  });
}

function init() {
  setupMarkdown();
  if (state.currentId && !current()) state.currentId = null;
  const input = $("input");
  const grow = () => { input.style.height = "auto"; input.style.height = Math.min(input.scrollHeight, 200) + "px"; };
  input.addEventListener("input", grow);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim() || state.abort) return;
    input.value = ""; grow();
    send(text);
  });
  $("stop").addEventListener("click", () => state.abort && state.abort.abort());
  $("new-chat").addEventListener("click", () => { if (state.abort) return; state.currentId = null; save(); renderAll(); input.focus(); });
  $("toggle-sidebar").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
  for (const b of document.querySelectorAll(".lang-switch button")) {
    b.addEventListener("click", () => { state.lang = b.dataset.lang; save(); renderAll(); });
  }
  initSettings();
  renderAll();
  loadModel();
  input.focus();
}

document.addEventListener("DOMContentLoaded", init);

// The live board. Story text is untrusted: it is only ever set as text
// (textContent); the one HTML it shows is the story body the server rendered from
// markdown with raw HTML off. No inline script: the Content-Security-Policy forbids it.
"use strict";

const PER_COLUMN = 200;
const boardEl = document.getElementById("board");
const columns = new Map(); // stage -> {el, list, countEl, total, cursor, moreEl}
const cards = new Map();   // id -> {data, el}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function node(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined && text !== null) el.textContent = String(text);
  return el;
}

function say(text) {
  const el = document.getElementById("message");
  el.textContent = text || "";
  el.hidden = !text;
}

function showDaemon(daemon) {
  const el = document.getElementById("daemon");
  el.textContent = `daemon ${daemon.state}` + (daemon.last_sync ? `, last sync ${daemon.last_sync}` : "");
  el.title = daemon.note || "";
  el.classList.toggle("stale", daemon.state !== "ready");
}

function sortKey(card) {
  return [card.number === null ? -1 : card.number, card.id];
}

function before(a, b) {
  const [x, y] = [sortKey(a), sortKey(b)];
  return x[0] !== y[0] ? x[0] < y[0] : x[1] < y[1];
}

function cardElement(card) {
  const el = node("article", "card");
  el.draggable = true;
  el.tabIndex = 0;
  el.dataset.id = card.id;
  const top = node("div", "card-top");
  top.append(node("span", "number", card.number === null ? card.id : `#${card.number}`));
  if (card.blocked) top.append(node("span", "blocked", "blocked"));
  el.append(top, node("div", "name", card.name || card.id));
  if (card.agent) el.append(node("div", "agent", `@${card.agent}`));
  if (card.unmet && card.unmet.length) {
    el.append(node("div", "waits", "waits on " + card.unmet.map(
      (dep) => (typeof dep === "number" ? `#${dep}` : dep)).join(", ")));
  }
  el.addEventListener("click", () => openStory(card.id));
  el.addEventListener("keydown", (event) => { if (event.key === "Enter") openStory(card.id); });
  el.addEventListener("dragstart", (event) => {
    event.dataTransfer.setData("text/plain", card.id);
    event.dataTransfer.effectAllowed = "move";
  });
  return el;
}

function filters() {
  return {
    text: document.getElementById("filter-text").value.trim(),
    agent: document.getElementById("filter-agent").value,
  };
}

// The filters as query parameters: the server pages through the matching cards
// (service.card_matches); `matches` is the same check for a card that changes.
function filterQuery() {
  const { text, agent } = filters();
  return (agent ? `&agent=${encodeURIComponent(agent)}` : "") + (text ? `&q=${encodeURIComponent(text)}` : "");
}

function matches(card) {
  const { agent } = filters();
  const text = filters().text.toLowerCase();
  if (agent && card.agent !== agent) return false;
  if (!text) return true;
  return [card.id, card.name || "", card.agent || ""].some((v) => v.toLowerCase().includes(text));
}

function applyFilter(entry) {
  entry.el.hidden = !matches(entry.data);
}

function refreshAgents(more) {
  const select = document.getElementById("filter-agent");
  const known = new Set([...select.options].map((o) => o.value));
  const agents = [...(more || []), ...[...cards.values()].map(({ data }) => data.agent)];
  for (const agent of agents) {
    if (agent && !known.has(agent)) {
      known.add(agent);
      const option = node("option", null, `@${agent}`);
      option.value = agent;
      select.append(option);
    }
  }
}

// Put a card in its column at its place (number order), or leave it out when it
// falls past the last card a capped column shows ("load more" brings it).
function place(card) {
  const column = columns.get(card.stage);
  const lastEl = column ? column.list.lastElementChild : null;
  const last = lastEl ? (cards.get(lastEl.dataset.id) || {}).data : null;
  const old = cards.get(card.id);
  if (old) old.el.remove();
  cards.delete(card.id);
  if (!column) return;
  if (column.cursor && (!last || before(last, card))) return; // beyond what it shows
  let next = null;
  for (const el of column.list.children) {
    const other = cards.get(el.dataset.id);
    if (other && before(card, other.data)) { next = el; break; }
  }
  const entry = { data: card, el: cardElement(card) };
  cards.set(card.id, entry);
  column.list.insertBefore(entry.el, next);
  applyFilter(entry);
}

// With a filter on, a column says how many of its stories match: "3 / 3334".
function setCount(column, count, total) {
  column.total = count;
  const filtered = filterQuery() !== "";
  column.countEl.textContent = filtered ? `${count} / ${total}` : String(count);
}

function columnElement(stage) {
  const el = node("section", "column");
  el.dataset.stage = stage;
  const title = node("h2");
  const countEl = node("span", "count", "0");
  title.append(node("span", null, stage), countEl);
  const list = node("div", "cards");
  const moreEl = node("button", "more", "load more");
  moreEl.type = "button";
  moreEl.hidden = true;
  el.append(title, list, moreEl);
  const column = { el, list, countEl, total: 0, cursor: null, moreEl };
  moreEl.addEventListener("click", () => loadMore(stage));
  el.addEventListener("dragover", (event) => { event.preventDefault(); el.classList.add("drop"); });
  el.addEventListener("dragleave", () => el.classList.remove("drop"));
  el.addEventListener("drop", (event) => {
    event.preventDefault();
    el.classList.remove("drop");
    const id = event.dataTransfer.getData("text/plain");
    if (id) moveStory(id, stage);
  });
  return column;
}

let loads = 0;
async function loadBoard() {
  const mine = ++loads;
  const board = await api(`/api/board?per_column=${PER_COLUMN}${filterQuery()}`);
  if (mine !== loads) return; // a newer filter has asked since
  showDaemon(board.daemon);
  boardEl.replaceChildren();
  columns.clear();
  cards.clear();
  for (const col of board.columns) {
    const column = columnElement(col.stage);
    columns.set(col.stage, column);
    boardEl.append(column.el);
    setCount(column, col.count, col.total);
    for (const card of col.cards) {
      const entry = { data: { ...card, stage: col.stage }, el: null };
      entry.el = cardElement(entry.data);
      cards.set(card.id, entry);
      column.list.append(entry.el);
      applyFilter(entry);
    }
    column.cursor = col.next_cursor;
    column.moreEl.hidden = !column.cursor;
  }
  refreshAgents(board.agents);
  document.body.dataset.ready = "true";
}

async function loadMore(stage) {
  const column = columns.get(stage);
  if (!column.cursor) return;
  const page = await api(`/api/cards?stage=${encodeURIComponent(stage)}&cursor=${encodeURIComponent(column.cursor)}&limit=${PER_COLUMN}${filterQuery()}`);
  column.cursor = null; // every card of the page goes in, at the end
  for (const card of page.cards) place(card);
  column.cursor = page.next_cursor;
  column.moreEl.hidden = !column.cursor;
  refreshAgents();
}

async function refreshCard(id) {
  try {
    const page = await api(`/api/cards?id=${encodeURIComponent(id)}`);
    for (const card of page.cards) place(card);
    refreshAgents();
  } catch (error) {
    if (error.status !== 404) throw error;
    const old = cards.get(id);
    if (old) old.el.remove();
    cards.delete(id);
  }
}

async function updateCounts() {
  if (filterQuery()) { // how many match: the board's counts without its cards
    const board = await api(`/api/board?per_column=0${filterQuery()}`);
    showDaemon(board.daemon);
    for (const col of board.columns) {
      const column = columns.get(col.stage);
      if (column) setCount(column, col.count, col.total);
    }
    return;
  }
  const status = await api("/api/status");
  showDaemon(status.daemon);
  for (const [stage, column] of columns) setCount(column, status.stages[stage] || 0);
}

let countsTimer = null;
function refreshCounts() {
  clearTimeout(countsTimer);
  countsTimer = setTimeout(() => updateCounts().catch((error) => say(error.message)), 150);
}

function listen() {
  const source = new EventSource("/api/events");
  source.addEventListener("change", (event) => {
    const row = JSON.parse(event.data);
    refreshCard(row.id).catch((error) => say(error.message));
    refreshCounts();
  });
  source.addEventListener("open", () => say(""));
  source.addEventListener("error", () => say("lost the live connection; reconnecting…"));
}

async function moveStory(id, stage) {
  const entry = cards.get(id);
  if (!entry || entry.data.stage === stage) return;
  const from = entry.data.stage;
  place({ ...entry.data, stage }); // at once; the change event confirms it
  try {
    await api(`/api/stories/${encodeURIComponent(id)}/move`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ stage }),
    });
    refreshCounts();
  } catch (error) {
    place({ ...entry.data, stage: from });
    say(`could not move ${id}: ${error.message}`);
  }
}

async function openStory(id) {
  const dialog = document.getElementById("story");
  const story = await api(`/api/stories/${encodeURIComponent(id)}?html=1`);
  document.getElementById("story-title").textContent = story.name || story.id;
  const meta = [story.id, story.stage];
  if (story.agent) meta.push(`@${story.agent}`);
  if (story.blocked) meta.push("blocked");
  document.getElementById("story-meta").textContent = meta.join(" · ");
  // Rendered by the server from markdown with raw HTML off (see pipelined/web.py).
  document.getElementById("story-body").innerHTML = story.html;
  if (!dialog.open) dialog.showModal();
}

document.getElementById("story-close").addEventListener("click", () => document.getElementById("story").close());
// A filter hides what no longer matches at once, then asks the server for every
// matching card (not only those already loaded) once typing pauses.
let filterTimer = null;
for (const id of ["filter-text", "filter-agent"]) {
  document.getElementById(id).addEventListener("input", () => {
    for (const entry of cards.values()) applyFilter(entry);
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => loadBoard().catch((error) => say(error.message)), 250);
  });
}

loadBoard().then(listen).catch((error) => say(error.message));

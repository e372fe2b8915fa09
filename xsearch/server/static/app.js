// The xsearch web gallery: plain JavaScript, no build step. It only talks to /api/*.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search");
const fields = ["q", "type", "under", "hybrid", "collapse"];
let lastResults = [];

function clock(seconds) {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function readForm() {
  const params = new URLSearchParams();
  for (const name of fields) {
    const input = $(name);
    if (input.type === "checkbox") {
      if (input.checked) params.set(name, "true");
    } else if (input.value.trim()) {
      params.set(name, input.value.trim());
    }
  }
  params.set("limit", "60");
  return params;
}

function writeForm(params) {
  for (const name of fields) {
    const input = $(name);
    if (input.type === "checkbox") input.checked = params.get(name) === "true";
    else input.value = params.get(name) || "";
  }
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

async function callApi(url, init) {
  const response = await fetch(url, init);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function search(pushHistory = true) {
  const params = readForm();
  if (!params.get("q")) return;
  if (pushHistory) history.pushState(null, "", `/?${params}`);
  await run(`/api/search?${params}`);
}

async function searchByImage(file) {
  const params = readForm();
  const body = new FormData();
  body.append("image", file);
  await run(`/api/search?${params}`, { method: "POST", body });
}

async function run(url, init) {
  showMessage("");
  $("results").setAttribute("aria-busy", "true");
  try {
    const doc = await callApi(url, init);
    render(doc);
  } catch (error) {
    showMessage(error.message);
    render({ results: [] });
  } finally {
    $("results").removeAttribute("aria-busy");
  }
}

// A tag as query text: tag:beach, or tag:"ice cream" for a name with spaces.
function tagQuery(label) {
  return /[\s"]/.test(label) ? `tag:"${label.replace(/["\\]/g, "\\$&")}"` : `tag:${label}`;
}

function searchTag(label) {
  $("q").value = tagQuery(label);
  search();
}

function tagButton(label, title) {
  const button = el("button", { className: "tag", type: "button", textContent: label, title });
  button.dataset.tag = label;
  button.addEventListener("click", () => searchTag(label));
  return button;
}

async function loadTagCloud() {
  const lang = $("tag-lang").value;
  try {
    const doc = await callApi(`/api/tags?lang=${lang}&limit=40`);
    const most = Math.max(1, ...doc.counts.map((c) => c.files));
    $("tag-cloud").replaceChildren(...doc.counts.map((c) => {
      const button = tagButton(c.label, `${c.files} file${c.files === 1 ? "" : "s"}`);
      // Font size grows with the share of files, between 0.8 and 1.6 em.
      button.style.fontSize = `${(0.8 + 0.8 * c.files / most).toFixed(2)}em`;
      return button;
    }));
    $("tag-cloud").dataset.lang = lang;
  } catch (error) {
    $("tag-cloud").replaceChildren();
  }
}

function moreLikeThis(id) {
  $("q").value = `id:${id}`;
  search();
}

function render(doc) {
  lastResults = doc.results;
  const grid = $("results");
  grid.replaceChildren(...doc.results.map(card));
  if (doc.query !== undefined && !doc.results.length) showMessage("No results.");
  document.body.dataset.state = "ready";
}

function card(hit) {
  const name = hit.path.split("/").pop();
  const folder = hit.path.slice(0, hit.path.length - name.length - 1) || "/";
  const segment = (hit.segments || [])[0];
  const start = hit.t ?? (segment ? segment.start : 0);
  const thumbTime = hit.t ?? (segment ? segment.best : undefined);
  const thumbUrl = `/api/media/${hit.id}/thumbnail` + (thumbTime !== undefined ? `?t=${thumbTime}` : "");

  const thumb = el("button", { className: "thumb", type: "button", title: hit.path },
    el("img", { src: thumbUrl, alt: name, loading: "lazy" }),
    el("span", { className: "badge score", textContent: hit.score.toFixed(3) }));
  if (hit.media_type === "video") {
    thumb.append(el("span", { className: "badge play", textContent: `▶ ${clock(start)}` }));
  }
  if (hit.duplicates) {
    thumb.append(el("span", { className: "badge dups", textContent: `+${hit.duplicates} similar` }));
  }
  thumb.addEventListener("click", () => openViewer(hit, start));

  const folderButton = el("button", { className: "folder", type: "button", textContent: folder,
    title: `Only search below ${folder}` });
  folderButton.addEventListener("click", () => { $("under").value = folder; search(); });
  const more = el("button", { className: "more", type: "button", textContent: "More like this" });
  more.addEventListener("click", () => moreLikeThis(hit.id));

  const lang = $("tag-lang").value;
  const tags = el("div", { className: "tags" },
    ...(hit.tags || []).filter((t) => t.lang === lang).slice(0, 3)
      .map((t) => tagButton(t.label, `score ${t.score.toFixed(2)}`)));
  const item = el("li", { className: "card" }, thumb,
    el("div", { className: "meta" }, el("span", { className: "name", textContent: name, title: hit.path }),
      folderButton, tags, more));
  item.dataset.id = hit.id;
  item.dataset.type = hit.media_type;
  item.dataset.start = start;
  return item;
}

function openViewer(hit, start) {
  const url = `/api/media/${hit.id}/file`;
  const body = $("viewer-body");
  let media;
  if (hit.media_type === "video") {
    // The #t fragment starts playback at the segment; currentTime is set too, for players
    // that ignore media fragments.
    media = el("video", { src: `${url}#t=${start}`, controls: true, autoplay: true, muted: true });
    media.addEventListener("loadedmetadata", () => {
      if (Math.abs(media.currentTime - start) > 0.25) media.currentTime = start;
    }, { once: true });
  } else {
    media = el("img", { src: url, alt: hit.path });
  }
  body.replaceChildren(media);
  $("viewer-title").textContent = hit.path + (hit.media_type === "video" ? ` @ ${clock(start)}` : "");
  $("viewer-open").href = url;
  $("viewer-more").onclick = () => { closeViewer(); moreLikeThis(hit.id); };
  $("viewer").showModal();
}

function closeViewer() {
  $("viewer-body").replaceChildren();
  $("viewer").close();
}

async function showStatus() {
  try {
    const s = await callApi("/api/status");
    const count = (n, word) => `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
    $("status").textContent =
      `${count(s.images, "image")} · ${count(s.videos, "video")} · model ${s.model || "none yet"}`;
  } catch (error) {
    $("status").textContent = error.message;
  }
}

form.addEventListener("submit", (event) => { event.preventDefault(); search(); });
for (const name of ["type", "hybrid", "collapse"]) $(name).addEventListener("change", () => search());
$("under").addEventListener("change", () => search());
$("tag-lang").addEventListener("change", () => {
  localStorage.setItem("xsearch-tag-lang", $("tag-lang").value);
  loadTagCloud();
  render({ results: lastResults });
});
$("image").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) searchByImage(file);
  event.target.value = "";
});
$("viewer-close").addEventListener("click", closeViewer);
$("viewer").addEventListener("close", () => $("viewer-body").replaceChildren());
window.addEventListener("popstate", () => {
  writeForm(new URLSearchParams(location.search));
  search(false);
});

writeForm(new URLSearchParams(location.search));
$("tag-lang").value = localStorage.getItem("xsearch-tag-lang")
  || (navigator.language.startsWith("zh") ? "zh" : "en");
showStatus();
loadTagCloud();
if ($("q").value) search(false);

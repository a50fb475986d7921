// semigen review: label by keyboard or by the class menus; every decision is POSTed as JSON
// and saved by the server at once. No libraries, nothing from the internet.
"use strict";

const classes = JSON.parse(document.body.dataset.classes);
const keys = JSON.parse(document.body.dataset.keys);  // class index -> key
const classOfKey = Object.fromEntries(Object.entries(keys).map(([c, k]) => [k, Number(c)]));

// A decision the server did not save is said at the top of the page, plainly, until one is
// saved again; the control that made it goes back to what is saved.
function notSaved(message) {
  const banner = document.getElementById("not-saved");
  banner.textContent = message ? `NOT SAVED: ${message}` : "";
  banner.hidden = !message;
}

async function post(url, body) {
  let response;
  try {
    response = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                 body: JSON.stringify(body)});
  } catch (error) {
    notSaved(`the server does not answer (${error.message}); is semigen review still running?`);
    throw error;
  }
  const text = await response.text();
  let found = {};
  try { found = JSON.parse(text); } catch (error) { found = {error: text}; }
  if (!response.ok) {
    notSaved(found.error || `${response.status} ${text}`);
    throw new Error(found.error || text);
  }
  notSaved("");
  if (found.added !== undefined) document.getElementById("added").textContent = found.added;
  return found;
}

// The class menus under each image (class pages, label errors).
for (const select of document.querySelectorAll("select.relabel")) {
  let saved = select.value;
  select.addEventListener("change", async () => {
    const label = select.value === "" ? null : Number(select.value);
    try {
      await post("/api/label", {part: select.dataset.part, index: Number(select.dataset.index), label});
      saved = select.value;
      select.closest(".card").classList.toggle("decided", label !== null);
    } catch (error) {
      select.value = saved;  // pending: the menu shows what is on disk
    }
  });
}

// Label next: one suggested image at a time; accept / a class key / skip / undo.
const labeler = document.getElementById("labeler");
if (labeler) {
  const history = [];  // {index, action}: what undo takes back, the last first
  let current = null;

  async function show() {
    const found = await (await fetch("/api/next")).json();
    document.getElementById("progress").textContent =
      `${found.labeled} labeled · ${found.skipped} skipped · ${found.left} left of ` +
      `${found.total} suggested`;
    document.getElementById("added").textContent = found.added;
    current = found.index === null ? null : found;
    labeler.hidden = current === null;
    document.getElementById("finished").hidden = current !== null;
    if (current) {
      document.getElementById("current").src = current.image;
      document.getElementById("guess").textContent =
        `the model says ${classes[current.predicted]} (${Math.round(100 * current.confidence)} %)` +
        (current.second === null ? "" : `, else ${classes[current.second]}`);
    }
  }

  // A failed save keeps the image on screen (the decision stays to be made) and the banner says why.
  async function label(c) {
    if (!current) return;
    try { await post("/api/label", {part: "unlabeled", index: current.index, label: c}); }
    catch (error) { return; }
    history.push({index: current.index, action: "label"});
    await show();
  }

  async function skip() {
    if (!current) return;
    try { await post("/api/skip", {index: current.index, skipped: true}); }
    catch (error) { return; }
    history.push({index: current.index, action: "skip"});
    await show();
  }

  async function undo() {
    const last = history[history.length - 1];
    if (!last) return;
    try {
      if (last.action === "label") {
        await post("/api/label", {part: "unlabeled", index: last.index, label: null});
      } else {
        await post("/api/skip", {index: last.index, skipped: false});
      }
    } catch (error) { return; }
    history.pop();
    await show();
  }

  document.getElementById("accept").addEventListener("click", () => current && label(current.predicted));
  document.getElementById("skip").addEventListener("click", skip);
  document.getElementById("undo").addEventListener("click", undo);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Enter" && current) { event.preventDefault(); label(current.predicted); }
    else if (event.key === " ") { event.preventDefault(); skip(); }
    else if (event.key === "Backspace") { event.preventDefault(); undo(); }
    else if (event.key in classOfKey) { event.preventDefault(); label(classOfKey[event.key]); }
  });
  show();
}

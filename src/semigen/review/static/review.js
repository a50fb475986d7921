// semigen review: label by keyboard or by the class menus; every decision is POSTed as JSON
// and saved by the server at once. No libraries, nothing from the internet.
"use strict";

const classes = JSON.parse(document.body.dataset.classes);
const keys = JSON.parse(document.body.dataset.keys);  // class index -> key
const classOfKey = Object.fromEntries(Object.entries(keys).map(([c, k]) => [k, Number(c)]));

async function post(url, body) {
  const response = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify(body)});
  if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
  const found = await response.json();
  if (found.added !== undefined) document.getElementById("added").textContent = found.added;
  return found;
}

// The class menus under each image (class pages, label errors).
for (const select of document.querySelectorAll("select.relabel")) {
  select.addEventListener("change", async () => {
    const label = select.value === "" ? null : Number(select.value);
    await post("/api/label", {part: select.dataset.part, index: Number(select.dataset.index), label});
    select.closest(".card").classList.toggle("decided", label !== null);
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

  async function label(c) {
    if (!current) return;
    await post("/api/label", {part: "unlabeled", index: current.index, label: c});
    history.push({index: current.index, action: "label"});
    await show();
  }

  async function skip() {
    if (!current) return;
    await post("/api/skip", {index: current.index, skipped: true});
    history.push({index: current.index, action: "skip"});
    await show();
  }

  async function undo() {
    const last = history.pop();
    if (!last) return;
    if (last.action === "label") {
      await post("/api/label", {part: "unlabeled", index: last.index, label: null});
    } else {
      await post("/api/skip", {index: last.index, skipped: false});
    }
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

// The retinaseg page: send each dropped image to POST /api/segment and show the answer.
// Plain JavaScript, no libraries, nothing fetched from anywhere but this server.
"use strict";

const MAX_FILES = 50; // images handled per drop
const FIGURES = [["input", "input"], ["probability", "probability"], ["mask", "mask"],
                 ["overlay", "overlay"]];
const rows = []; // one CSV row per finished image, for "Download all measurements"

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function stem(name) {
  const base = name.replace(/^.*[\\/]/, "");
  return base.includes(".") ? base.slice(0, base.lastIndexOf(".")) : base;
}

function formatValue(v) {
  if (v === null || v === undefined) return "nan";
  if (typeof v === "number") {
    return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(5)));
  }
  return String(v);
}

function csvCell(v) {
  const s = formatValue(v);
  return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

function csvOf(list) {
  const columns = [];
  for (const row of list) for (const k of Object.keys(row)) if (!columns.includes(k)) columns.push(k);
  const lines = [columns.join(",")];
  for (const row of list) lines.push(columns.map((c) => (c in row ? csvCell(row[c]) : "")).join(","));
  return lines.join("\n") + "\n";
}

function download(text, name) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function loadModels() {
  try {
    const answer = await fetch("/api/models");
    const body = await answer.json();
    const select = $("model");
    for (const m of body.models) {
      select.append(el("option", { value: m.name, title: m.summary, text: m.name }));
    }
    const defaults = Object.entries(body.default).map(([k, v]) => `${k}: ${v}`).join(", ");
    $("models-note").textContent = `auto picks the bundled model by the image's colour (${defaults}); ` +
      `at most ${Math.round(body.max_bytes / 2 ** 20)} MB and ` +
      `${body.max_pixels.toLocaleString("en")} pixels per image.`;
  } catch (err) {
    $("models-note").textContent = "the model list could not be loaded: " + err;
  }
}

function newCard(file) {
  const status = el("p", { class: "status", text: "segmenting…" });
  const card = el("article", { class: "result", dataset: { state: "pending" } },
                  el("h2", { text: file.name }), status);
  $("results").prepend(card);
  return card;
}

function figure(src, caption, kind) {
  return el("figure", {}, el("img", { src, alt: caption, class: kind }),
            el("figcaption", { text: caption }));
}

function table(measurements) {
  const body = el("tbody");
  for (const [k, v] of Object.entries(measurements)) {
    body.append(el("tr", { dataset: { key: k } }, el("th", { scope: "row", text: k }),
                   el("td", { text: formatValue(v) })));
  }
  return el("table", { class: "measurements" },
            el("thead", {}, el("tr", {}, el("th", { text: "measurement" }), el("th", { text: "value" }))),
            body);
}

function showResult(card, body, started) {
  const figures = el("div", { class: "figures" },
                     ...FIGURES.map(([key, caption]) => figure(body.images[key], caption, key)));
  const name = stem(body.name);
  const links = el("p", { class: "downloads" },
                   el("a", { href: body.images.mask, download: `${name}_mask.png`, text: "mask (PNG)" }),
                   " · ",
                   el("a", { href: "#", class: "csv", text: "measurements (CSV)" }));
  links.querySelector(".csv").addEventListener("click", (e) => {
    e.preventDefault();
    download(body.csv, `${name}_measurements.csv`);
  });
  const details = el("details", { open: "" }, el("summary", { text: "measurements" }),
                     el("div", { class: "table-box" }, table(body.measurements)));
  card.append(figures, links, details);
  return Promise.all([...card.querySelectorAll("img")].map((img) => img.decode().catch(() => null)))
    .then(() => {
      const ms = performance.now() - started;
      const s = body.seconds;
      card.querySelector(".status").textContent =
        `${body.width}×${body.height} px, ${body.modality}, model ${body.model} ` +
        `(threshold ${formatValue(body.threshold)}), vessel fraction ` +
        `${formatValue(body.vessel_fraction)}; ${(ms / 1000).toFixed(2)} s from upload to result ` +
        `(model load ${s.load.toFixed(2)} s, segment ${s.segment.toFixed(2)} s, measure ` +
        `${s.measure.toFixed(2)} s)`;
      card.dataset.ms = ms.toFixed(1);
      card.dataset.state = "done";
    });
}

function showError(card, message) {
  card.querySelector(".status").replaceWith(el("p", { class: "error", role: "alert", text: message }));
  card.dataset.state = "error";
}

async function segmentOne(file) {
  const card = newCard(file);
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", $("model").value);
  if ($("mm").value.trim()) form.append("mm_per_px", $("mm").value.trim());
  const started = performance.now();
  let answer, body;
  try {
    answer = await fetch("/api/segment", { method: "POST", body: form });
    body = await answer.json();
  } catch (err) {
    showError(card, `no answer from the server (${err}).`);
    return;
  }
  if (!answer.ok) {
    showError(card, body.error || `the server answered ${answer.status}.`);
    return;
  }
  await showResult(card, body, started);
  rows.push({ file: body.name, model: body.model, threshold: body.threshold, ...body.measurements });
  $("csv-all").hidden = false;
}

async function handleFiles(fileList) {
  const files = [...fileList].slice(0, MAX_FILES);
  if (fileList.length > MAX_FILES) {
    alert(`only the first ${MAX_FILES} of ${fileList.length} files are segmented.`);
  }
  for (const file of files) await segmentOne(file); // one at a time: the server computes one
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => {
    handleFiles(e.target.files).finally(() => { e.target.value = ""; });
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    handleFiles(e.dataTransfer.files);
  });
  $("csv-all").addEventListener("click", () => download(csvOf(rows), "measurements.csv"));
  loadModels();
}

setUp();

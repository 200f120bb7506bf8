// The page's behaviour. Every number shown comes from the JSON API; this file only lays them out.
"use strict";

const state = {
  info: null,
  images: [],   // {id, url, name}
  prompts: [],
  matrix: null, // the last /api/matrix response
  selection: null, // {kind: "image" | "prompt" | "cell", image, prompt}
  templateSets: [],
  zeroshotImage: null,
};

const $ = (selector) => document.querySelector(selector);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

const formatScore = (value) => (Math.abs(value) < 0.005 ? 0 : value).toFixed(2); // never "-0.00"
const formatProbability = (value) => value.toFixed(3);

// --- talking to the API -----------------------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({detail: response.statusText}));
  if (!response.ok) {
    const detail = Array.isArray(body.detail)
      ? body.detail.map((problem) => `${problem.loc.slice(1).join(".")}: ${problem.msg}`).join("; ")
      : body.detail;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

const postJson = (path, body) =>
  api(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});

function uploadForm(file, fields = {}) {
  const form = new FormData();
  form.append("file", file);
  for (const [key, value] of Object.entries(fields)) if (value !== "") form.append(key, value);
  return form;
}

function showError(error) {
  const box = $("#error");
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

async function guarded(action) {
  try {
    showError(null);
    await action();
  } catch (error) {
    showError(error);
  }
}

// --- the similarity matrix -------------------------------------------------------------------

async function refreshMatrix() {
  state.matrix = null;
  clearMaps(); // the images or prompts changed: a map shown may no longer be the prompt's
  if (state.images.length && state.prompts.length) {
    state.matrix = await postJson("/api/matrix", {images: state.images.map((image) => image.id), prompts: state.prompts});
  }
  renderMatrix();
}

const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function heat(value, low, high) {
  // the colour of a cell from its place between the matrix's lowest and highest value
  const t = high > low ? (value - low) / (high - low) : 0.5;
  const position = t * (VIRIDIS.length - 1), stop = Math.min(Math.floor(position), VIRIDIS.length - 2);
  const mix = VIRIDIS[stop].map((channel, i) => Math.round(channel + (VIRIDIS[stop + 1][i] - channel) * (position - stop)));
  return {background: `rgb(${mix.join(",")})`, color: t > 0.6 ? "#111" : "#fff"};
}

function renderMatrix() {
  const holder = $("#matrix");
  holder.replaceChildren();
  if (!state.matrix) {
    holder.append(element("p", {class: "muted"}, "Add at least one image and one prompt."));
    renderDetails();
    return;
  }
  const {cosine} = state.matrix;
  const values = cosine.flat();
  const low = Math.min(...values), high = Math.max(...values);
  const table = element("table", {class: "matrix", id: "matrix-table"});
  const head = element("tr", {}, element("th", {class: "corner"}));
  state.images.forEach((image, column) => {
    const remove = element("button", {class: "remove", title: "remove this image", "aria-label": `remove image ${column}`,
      onclick: (event) => { event.stopPropagation(); removeImage(column); }}, "×");
    head.append(element("th", {class: "image-head", "data-image": column, title: image.name,
      onclick: () => select({kind: "image", image: column})},
      element("img", {src: mapView.overlays[image.id] || image.url, alt: image.name}), remove));
  });
  table.append(element("thead", {}, head));
  const body = element("tbody");
  state.prompts.forEach((prompt, row) => {
    const remove = element("button", {class: "remove", title: "remove this prompt", "aria-label": `remove prompt ${row}`,
      onclick: (event) => { event.stopPropagation(); removePrompt(row); }}, "×");
    const line = element("tr", {}, element("th", {class: mapView.prompt === row ? "prompt-head mapped" : "prompt-head",
      "data-prompt": row, title: "click to see where this prompt is in each image",
      onclick: () => { select({kind: "prompt", prompt: row}); guarded(() => toggleMaps(row)); }},
      element("span", {}, prompt), remove));
    state.images.forEach((_, column) => {
      const value = cosine[column][row];
      const colours = heat(value, low, high);
      const cell = element("td", {class: "cell", "data-image": column, "data-prompt": row, "data-value": value,
        onclick: () => select({kind: "cell", image: column, prompt: row})}, formatScore(value));
      cell.style.background = colours.background;
      cell.style.color = colours.color;
      line.append(cell);
    });
    body.append(line);
  });
  table.append(body);
  holder.append(table);
  highlightSelection();
  renderDetails();
}

function select(selection) {
  state.selection = selection;
  highlightSelection();
  renderDetails();
}

function highlightSelection() {
  const selection = state.selection;
  document.querySelectorAll("#matrix-table .selected").forEach((node) => node.classList.remove("selected"));
  if (!selection) return;
  const marks = {
    image: `[data-image="${selection.image}"]`,
    prompt: `[data-prompt="${selection.prompt}"]`,
    cell: `td[data-image="${selection.image}"][data-prompt="${selection.prompt}"]`,
  }[selection.kind];
  document.querySelectorAll(`#matrix-table ${marks}`).forEach((node) => node.classList.add("selected"));
}

function probabilityBars(rows) {
  // rows: {label, value, thumbnail?}; the bars keep the matrix order so rows line up with it
  return element("div", {class: "bars"}, ...rows.map((row, index) => {
    const bar = element("span", {class: "bar"});
    bar.style.width = `${(100 * row.value).toFixed(1)}%`;
    const label = element("span", {class: "bar-label", title: row.label}, row.label);
    if (row.thumbnail) label.prepend(element("img", {src: row.thumbnail, alt: ""}));
    return element("div", {class: "bar-row", "data-index": index, "data-value": row.value}, label,
      element("span", {class: "bar-track"}, bar),
      element("span", {class: "bar-value"}, formatProbability(row.value)));
  }));
}

function renderDetails() {
  const panel = $("#details");
  panel.replaceChildren();
  const selection = state.selection;
  if (!state.matrix || !selection) {
    panel.append(element("p", {class: "muted"}, "Nothing selected."));
    return;
  }
  const m = state.matrix;
  if (selection.kind === "image") {
    const image = state.images[selection.image];
    panel.append(element("h3", {}, "p(prompt | image)"), element("img", {class: "detail-image", src: image.url, alt: image.name}),
      probabilityBars(state.prompts.map((prompt, row) => ({label: prompt, value: m.prompt_probabilities[selection.image][row]}))));
  } else if (selection.kind === "prompt") {
    panel.append(element("h3", {}, "p(image | prompt)"), element("p", {class: "detail-prompt"}, state.prompts[selection.prompt]),
      probabilityBars(state.images.map((image, column) => ({label: image.name, thumbnail: image.url,
        value: m.image_probabilities[selection.prompt][column]}))));
  } else {
    const {image, prompt} = selection;
    const facts = [
      ["cosine", formatScore(m.cosine[image][prompt]), m.cosine[image][prompt], "cosine"],
      ["p(prompt | image)", formatProbability(m.prompt_probabilities[image][prompt]), m.prompt_probabilities[image][prompt], "prompt-probability"],
      ["p(image | prompt)", formatProbability(m.image_probabilities[prompt][image]), m.image_probabilities[prompt][image], "image-probability"],
    ];
    panel.append(element("h3", {}, "One pair"),
      element("img", {class: "detail-image", src: state.images[image].url, alt: state.images[image].name}),
      element("p", {class: "detail-prompt"}, state.prompts[prompt]),
      element("dl", {}, ...facts.flatMap(([name, text, value, key]) =>
        [element("dt", {}, name), element("dd", {"data-fact": key, "data-value": value}, text)])));
  }
  panel.append(element("p", {class: "muted"}, `softmax of ${m.logit_scale.toFixed(2)} × cosine`));
}

function removeImage(column) {
  const [removed] = state.images.splice(column, 1);
  if (removed.url.startsWith("blob:")) URL.revokeObjectURL(removed.url);
  state.selection = null;
  guarded(refreshMatrix);
}

function removePrompt(row) {
  state.prompts.splice(row, 1);
  state.selection = null;
  guarded(refreshMatrix);
}

async function uploadImage(file) {
  const uploaded = await api("/api/images", {method: "POST", body: uploadForm(file)});
  return {id: uploaded.id, url: URL.createObjectURL(file), name: file.name};
}

async function loadDemo() {
  const demo = await api("/api/demo");
  state.images = demo.images.map((image) => ({id: image.id, url: image.url, name: image.prompt}));
  state.prompts = demo.prompts.slice();
  state.selection = null;
  await refreshMatrix();
}

// --- similarity maps: where a prompt is in each image ----------------------------------------

const mapView = {prompt: null, overlays: {}}; // the matrix's mapped prompt row; image id -> overlay (PNG data URL)

function clearMaps() {
  mapView.prompt = null;
  mapView.overlays = {};
}

async function toggleMaps(row) {
  // a prompt's first click lays its map over every image of the matrix, the second takes it off
  if (mapView.prompt === row) {
    clearMaps();
  } else {
    const result = await postJson("/api/maps", {images: state.images.map((image) => image.id), prompt: state.prompts[row]});
    mapView.prompt = row;
    mapView.overlays = Object.fromEntries(result.maps.map((map) => [map.image, map.overlay]));
  }
  renderMatrix();
}

async function showPlaygroundMap(label, row) {
  // the label embedded as the classification embeds it: the same templates, all or the first
  const request = zeroshotRequest();
  const body = {images: [request.image], prompt: label};
  const set = state.templateSets.find((candidate) => candidate.name === request.template_set);
  const templates = request.templates || (set ? set.templates : null);
  if (request.mode === "single" && templates) body.templates = templates.slice(0, 1);
  else if (request.templates) body.templates = request.templates;
  else body.template_set = request.template_set;
  const result = await postJson("/api/maps", body);
  $("#zs-preview").src = result.maps[0].overlay;
  $("#zs-preview").alt = `where "${label}" is in the image`;
  document.querySelectorAll("#zs-bars .bar-row").forEach((node) => node.classList.toggle("mapped", node === row));
}

// --- the zero-shot playground ----------------------------------------------------------------

function zeroshotRequest() {
  const labels = $("#zs-labels").value.split(",").map((label) => label.trim()).filter(Boolean);
  const mode = document.querySelector('input[name="zs-mode"]:checked').value;
  const request = {image: state.zeroshotImage.id, labels, mode};
  const chosen = $("#zs-set").value;
  if (chosen === "custom") {
    request.templates = $("#zs-templates").value.split("\n").map((line) => line.trim()).filter(Boolean);
  } else {
    request.template_set = chosen;
  }
  return request;
}

async function classify() {
  if (!state.zeroshotImage) throw new Error("upload an image first");
  const result = await postJson("/api/zeroshot", zeroshotRequest());
  const order = result.labels.map((_, index) => index).sort((a, b) => result.probabilities[b] - result.probabilities[a]);
  const bars = probabilityBars(order.map((index) => ({label: result.labels[index], value: result.probabilities[index]})));
  bars.id = "zs-bars";
  $("#zs-bars").replaceWith(bars);
  $("#zs-preview").src = state.zeroshotImage.url;
  bars.querySelectorAll(".bar-row").forEach((row, position) => row.addEventListener("click",
    () => guarded(() => showPlaygroundMap(result.labels[order[position]], row))));
  const used = result.templates.length === 1 ? `prompt: ${result.templates[0]}` : `ensemble of ${result.templates.length} templates`;
  $("#zs-used").textContent = `${used}; softmax of ${result.logit_scale.toFixed(2)} × cosine`;
}

function setupZeroshot() {
  const select = $("#zs-set");
  select.replaceChildren(...state.templateSets.map((set) =>
    element("option", {value: set.name}, `${set.name} (${set.templates.length} templates)`)),
    element("option", {value: "custom"}, "custom templates"));
  const preferred = state.templateSets.find((set) => set.name === "icons") || state.templateSets[0];
  select.value = preferred ? preferred.name : "custom";
  $("#zs-templates").hidden = select.value !== "custom";
  select.addEventListener("change", () => {
    $("#zs-templates").hidden = select.value !== "custom";
    if (state.zeroshotImage) guarded(classify);
  });
  document.querySelectorAll('input[name="zs-mode"]').forEach((radio) =>
    radio.addEventListener("change", () => state.zeroshotImage && guarded(classify)));
  $("#zs-form").addEventListener("submit", (event) => { event.preventDefault(); guarded(classify); });
  $("#zs-upload").addEventListener("change", (event) => guarded(async () => {
    const file = event.target.files[0];
    if (!file) return;
    state.zeroshotImage = await uploadImage(file);
    $("#zs-preview").src = state.zeroshotImage.url;
    await classify();
  }));
}

// --- search ----------------------------------------------------------------------------------

function renderHits(response) {
  const holder = $("#search-results");
  holder.replaceChildren(...response.hits.map((hit, rank) =>
    element("figure", {class: "hit", "data-rank": rank, "data-value": hit.score, title: hit.path},
      element("img", {src: hit.url, alt: hit.path, loading: "lazy"}),
      element("figcaption", {}, element("span", {class: "hit-score"}, formatProbability(hit.score)),
        element("span", {class: "hit-name"}, hit.path.split("/").pop())))));
  if (!response.hits.length) holder.append(element("p", {class: "muted"}, "No results."));
}

function searchOptions() {
  return {k: Number($("#search-k").value) || 20, folder: $("#search-folder").value.trim()};
}

function setupSearch() {
  const index = state.info.index;
  if (!index) {
    $("#search-status").textContent = "No image index is served: start the server with clipforge serve --index PATH.";
    $("#search-tab .controls").hidden = true;
    return;
  }
  $("#search-status").textContent = `${index.images} images under ${index.roots.join(", ")}`;
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const {k, folder} = searchOptions();
      const body = {text: $("#search-text").value, k};
      if (folder) body.folder = folder;
      renderHits(await postJson("/api/search/text", body));
    });
  });
  $("#search-upload").addEventListener("change", (event) => guarded(async () => {
    const file = event.target.files[0];
    if (!file) return;
    const {k, folder} = searchOptions();
    renderHits(await api("/api/search/image", {method: "POST", body: uploadForm(file, {k, folder})}));
  }));
}

// --- scoring ---------------------------------------------------------------------------------

const scoring = {images: [], result: null}; // images: {id, url, name}; result: the last /api/score response

const lines = (text) => text.split("\n").map((line) => line.trim()).filter(Boolean);

function renderScoreImages() {
  $("#score-images").replaceChildren(...scoring.images.map((image, index) =>
    element("figure", {class: "score-thumb", "data-index": index, title: image.name},
      element("img", {src: image.url, alt: image.name}),
      element("button", {class: "remove", type: "button", "aria-label": `remove image ${index}`,
        onclick: () => removeScoreImage(index)}, "×"))));
}

function removeScoreImage(index) {
  const [removed] = scoring.images.splice(index, 1);
  if (removed.url.startsWith("blob:") && !state.images.some((image) => image.url === removed.url)) {
    URL.revokeObjectURL(removed.url);
  }
  renderScoreImages();
  guarded(runScore);
}

function renderScore() {
  const result = scoring.result;
  const holder = $("#score-results"), ranking = $("#score-ranking");
  holder.replaceChildren();
  ranking.replaceChildren();
  if (!result) {
    holder.append(element("p", {class: "muted"}, "Add at least one image and one prompt."));
    return;
  }
  const byId = Object.fromEntries(scoring.images.map((image) => [image.id, image]));
  const head = element("tr", {}, element("th", {class: "corner"}),
    ...result.prompts.map((prompt) => element("th", {class: "score-prompt", title: prompt}, prompt)));
  const rows = result.images.map((id, row) => element("tr", {},
    element("th", {class: "score-image-head"}, element("img", {src: byId[id].url, alt: byId[id].name})),
    ...result.prompts.map((_, column) => {
      const extra = [element("span", {class: "score-100", "data-value": result.clip_score_100[row][column]},
        result.clip_score_100[row][column].toFixed(1))];
      if (result.ref_clip_score) {
        extra.push(element("span", {class: "score-ref", "data-value": result.ref_clip_score[row][column]},
          `Ref ${result.ref_clip_score[row][column].toFixed(2)}`));
      }
      return element("td", {class: "score-cell", "data-image": row, "data-prompt": column,
        "data-value": result.clip_score[row][column], title: `cosine ${formatScore(result.cosine[row][column])}`},
        element("span", {class: "score-main"}, result.clip_score[row][column].toFixed(2)), ...extra);
    })));
  holder.append(element("table", {class: "score-table", id: "score-table"}, element("thead", {}, head),
    element("tbody", {}, ...rows)));
  ranking.append(...result.prompts.map((prompt, column) => element("div", {class: "ranking", "data-prompt": column},
    element("h3", {}, prompt),
    element("ol", {}, ...result.ranking[column].map((hit, rank) =>
      element("li", {"data-rank": rank, "data-image": hit.image, "data-value": hit.clip_score},
        element("img", {src: byId[hit.image].url, alt: byId[hit.image].name}),
        element("span", {}, hit.clip_score.toFixed(2))))))));
}

async function runScore() {
  const prompts = lines($("#score-prompts").value), references = lines($("#score-references").value);
  scoring.result = null;
  if (scoring.images.length && prompts.length) {
    const request = {images: scoring.images.map((image) => image.id), prompts};
    if (references.length) request.references = references;
    scoring.result = await postJson("/api/score", request);
  }
  renderScore();
}

// Uploads each file onto `images`; a bad file is returned to be reported, the good ones are still kept.
async function uploadEach(files, images) {
  let failure = null;
  for (const file of files) {
    try {
      images.push(await uploadImage(file));
    } catch (error) {
      failure = error;
    }
  }
  return failure;
}

async function addScoreFiles(files) {
  const failure = await uploadEach(files, scoring.images);
  renderScoreImages();
  await runScore();
  if (failure) throw failure;
}

function setupScore() {
  $("#score-upload").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    guarded(() => addScoreFiles(files));
  });
  const drop = $("#score-drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    guarded(() => addScoreFiles([...event.dataTransfer.files].filter((file) => file.type.startsWith("image/"))));
  });
  $("#score-clear").addEventListener("click", () => { scoring.images = []; renderScoreImages(); guarded(runScore); });
  $("#score-run").addEventListener("click", () => guarded(runScore));
}

async function scoreDemo() {
  // the Score view starts with the demo's images and its first three prompts
  scoring.images = state.images.map((image) => ({...image}));
  $("#score-prompts").value = state.prompts.slice(0, 3).join("\n");
  renderScoreImages();
  await runScore();
}

// --- start -----------------------------------------------------------------------------------

function setupTabs() {
  document.querySelectorAll('[role="tab"]').forEach((tab) => tab.addEventListener("click", () => {
    document.querySelectorAll('[role="tab"]').forEach((other) => other.setAttribute("aria-selected", String(other === tab)));
    document.querySelectorAll(".tab").forEach((section) => { section.hidden = section.id !== `${tab.dataset.tab}-tab`; });
  }));
}

function setupMatrix() {
  $("#matrix-upload").addEventListener("change", (event) => guarded(async () => {
    const files = [...event.target.files];
    event.target.value = ""; // so that choosing the same file again is a change
    const failure = await uploadEach(files, state.images);
    await refreshMatrix();
    if (failure) throw failure;
  }));
  $("#prompt-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = $("#prompt-input").value.trim();
    if (!prompt) return;
    state.prompts.push(prompt);
    $("#prompt-input").value = "";
    guarded(refreshMatrix);
  });
  $("#demo-reset").addEventListener("click", () => guarded(loadDemo));
}

async function start() {
  setupTabs();
  setupMatrix();
  const [info, templateSets] = await Promise.all([api("/api/info"), api("/api/template-sets")]);
  state.info = info;
  state.templateSets = templateSets;
  $("#model-info").textContent =
    `model ${info.model} · logit scale ${info.logit_scale.toFixed(2)} (temperature ${info.temperature.toFixed(4)})`;
  setupZeroshot();
  setupSearch();
  setupScore();
  await loadDemo();
  state.zeroshotImage = state.images[0];
  await scoreDemo();
  $("#zs-preview").src = state.zeroshotImage.url;
  document.body.dataset.ready = "true";
}

guarded(start);

// The page of segearth-ov explore: pick an image and a region, type classes, see the
// result; every request goes to this app's own /api routes.
'use strict';

const $ = (id) => document.getElementById(id);
const state = { inputs: {}, input: null, region: null, methods: [], result: null,
                labels: null };

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
}

async function call(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function regionText(region) {
  return `${region[0]}-${region[1]}, ${region[2]}-${region[3]}`;
}

function drawRegion() {
  const image = state.inputs[state.input];
  const preview = $('preview');
  if (!image || !state.region || !preview.clientWidth) return;
  const scale = preview.clientWidth / image.width;
  const [y1, y2, x1, x2] = state.region;
  Object.assign($('region-box').style, { top: `${y1 * scale}px`, left: `${x1 * scale}px`,
    height: `${(y2 - y1) * scale}px`, width: `${(x2 - x1) * scale}px` });
  $('region-text').textContent = regionText(state.region);
}

function chooseInput(id) {
  state.input = id;
  state.region = state.inputs[id].region.slice();
  $('input-select').value = id;
  $('preview').src = `/api/preview/${id}`;
}

function addInput(image) {
  state.inputs[image.id] = image;
  const option = document.createElement('option');
  option.value = image.id;
  option.textContent = `${image.name} (${image.width} x ${image.height})`;
  $('input-select').appendChild(option);
}

function showMethodOptions() {
  const method = state.methods.find((m) => m.name === $('method').value);
  const box = $('method-options');
  box.replaceChildren();
  for (const option of method ? method.options : []) {
    const label = document.createElement('label');
    label.textContent = `${option.name} `;
    const select = document.createElement('select');
    select.id = `option-${option.name}`;
    select.dataset.option = option.name;
    for (const choice of option.choices) {
      const item = document.createElement('option');
      item.value = item.textContent = choice;
      select.appendChild(item);
    }
    select.value = (state.choices && state.choices[option.name]) || option.default;
    label.appendChild(select);
    box.appendChild(label);
  }
}

// dragging on the preview chooses the region, in the image's own pixels
function regionDrag() {
  const stage = $('stage');
  let start = null;
  const point = (event) => {
    const rect = $('preview').getBoundingClientRect();
    const image = state.inputs[state.input];
    const scale = image.width / rect.width;
    const clamp = (v, max) => Math.max(0, Math.min(max, Math.round(v)));
    return [clamp((event.clientY - rect.top) * scale, image.height),
            clamp((event.clientX - rect.left) * scale, image.width)];
  };
  stage.addEventListener('mousedown', (event) => {
    event.preventDefault();  // no native drag of the image: it would swallow the mouseup
    if (state.input) start = point(event);
  });
  window.addEventListener('mousemove', (event) => {
    if (!start) return;
    const [y, x] = point(event);
    state.region = [Math.min(start[0], y), Math.max(start[0], y),
                    Math.min(start[1], x), Math.max(start[1], x)];
    drawRegion();
  });
  window.addEventListener('mouseup', () => {
    if (start && (state.region[1] - state.region[0] < 8 || state.region[3] - state.region[2] < 8)) {
      state.region = state.inputs[state.input].region.slice();  // a click: the default
      drawRegion();
    }
    start = null;
  });
}

async function watchProgress(done) {
  while (!done.value) {
    try {
      const progress = await call('/api/progress');
      if (!done.value && progress.phase === 'preparing') {
        $('status').textContent = `Computing the image side (first pass): tile ${progress.done} of ${progress.total}...`;
      } else if (!done.value && progress.phase === 'scoring') {
        $('status').textContent = 'Scoring the classes...';
      }
    } catch (error) { /* the next poll will tell */ }
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

function showResult(result) {
  if (!state.result || state.result.result !== result.result) {
    $('pointer-class').textContent = '-';  // the previous result's class is stale
    state.labels = null;
  }
  state.result = result;
  const base = `/api/result/${result.result}`;
  $('result').hidden = false;
  $('from-prepared').textContent = result.from_prepared
    ? 'From the prepared image (only the words were computed).'
    : 'First pass: the image side was computed and kept.';
  $('seconds').textContent = `${result.seconds.toFixed(2)} s`;
  const view = $('view-confidence').checked ? 'confidence' : 'overlay';
  $('overlay').src = `${base}/${view}.png`;
  const labels = new Image();
  labels.onload = () => {
    const canvas = document.createElement('canvas');
    canvas.width = labels.naturalWidth;
    canvas.height = labels.naturalHeight;
    const context = canvas.getContext('2d', { willReadFrequently: true });
    context.drawImage(labels, 0, 0);
    state.labels = context.getImageData(0, 0, canvas.width, canvas.height);
    $('overlay').dataset.ready = result.result;
  };
  labels.src = `${base}/classes.png`;
  const legend = $('legend');
  legend.replaceChildren();
  const rows = $('areas').querySelector('tbody');
  rows.replaceChildren();
  for (const item of result.legend) {
    const entry = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = item.colour;
    entry.append(swatch, item.name);
    entry.title = item.synonyms;
    legend.appendChild(entry);
    const row = document.createElement('tr');
    for (const value of [item.name, item.pixels, `${item.share.toFixed(2)} %`,
                         item.area_m2 === null ? '-' : item.area_m2.toFixed(1)]) {
      const cell = document.createElement('td');
      cell.textContent = value;
      row.appendChild(cell);
    }
    rows.appendChild(row);
  }
  $('area-note').textContent = result.legend.length && result.legend[0].area_m2 === null
    ? 'No projected CRS in metres: areas are given in pixels only.' : '';
  $('download-labels').href = `${base}/${result.labels}`;
  $('download-labels').textContent = `labels (${result.labels.endsWith('.tif') ? 'GeoTIFF' : 'PNG'})`;
  $('download-polygons').href = `${base}/polygons.gpkg`;
  $('download-command').href = `${base}/command.txt`;
  $('command').textContent = result.command;
}

function pointerClass(event) {
  const result = state.result;
  const target = $('overlay');
  if (!result || !state.labels) return;
  const rect = target.getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left) * state.labels.width / rect.width);
  const y = Math.floor((event.clientY - rect.top) * state.labels.height / rect.height);
  if (x < 0 || y < 0 || x >= state.labels.width || y >= state.labels.height) return;
  const offset = 4 * (y * state.labels.width + x);
  const index = state.labels.data[offset] + 256 * state.labels.data[offset + 1];
  const item = result.legend[index];
  $('pointer-class').textContent = item ? item.name : 'no data';
}

async function segment() {
  showError('');
  if (!state.input) { showError('open an image first'); return; }
  const choices = {};
  for (const select of $('method-options').querySelectorAll('select')) {
    choices[select.dataset.option] = select.value;
  }
  const done = { value: false };
  $('segment').disabled = true;
  $('status').textContent = 'Working...';
  watchProgress(done);
  try {
    const result = await call('/api/segment', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ input: state.input, classes: $('classes').value,
                             prob_thd: $('prob-thd').value, region: state.region,
                             method: $('method').value, choices }) });
    state.choices = result.choices;
    showResult(result);
    $('status').textContent = `Done: ${result.input}, region ${regionText(result.region)}.`;
  } catch (error) {
    $('status').textContent = '';
    showError(error.message);
  } finally {
    done.value = true;
    $('segment').disabled = false;
  }
}

async function upload() {
  showError('');
  const file = $('upload').files[0];
  if (!file) return;
  if (file.size > state.maxUpload) {
    showError(`${file.name} is larger than the upload limit of ${Math.round(state.maxUpload / 2 ** 20)} MiB`);
    return;
  }
  const form = new FormData();
  form.append('image', file);
  $('status').textContent = `Opening ${file.name}...`;
  try {
    const image = await call('/api/upload', { method: 'POST', body: form });
    addInput(image);
    chooseInput(image.id);
    $('status').textContent = `Opened ${image.name}.`;
  } catch (error) {
    $('status').textContent = '';
    showError(error.message);
  }
}

async function start() {
  const info = await call('/api/info');
  state.methods = info.methods;
  state.choices = info.choices;
  state.maxUpload = info.max_upload;
  for (const method of info.methods) {
    const option = document.createElement('option');
    option.value = method.name;
    option.textContent = method.title;
    option.title = method.summary;
    $('method').appendChild(option);
  }
  $('method').value = info.method;
  showMethodOptions();
  for (const image of info.inputs) addInput(image);
  if (info.inputs.length) chooseInput(info.inputs[0].id);
  $('preview').addEventListener('load', drawRegion);
  window.addEventListener('resize', drawRegion);
  $('input-select').addEventListener('change', (event) => chooseInput(event.target.value));
  $('method').addEventListener('change', showMethodOptions);
  $('upload').addEventListener('change', upload);
  $('segment').addEventListener('click', segment);
  $('classes').addEventListener('keydown', (event) => { if (event.key === 'Enter') segment(); });
  $('overlay').addEventListener('mousemove', pointerClass);
  for (const radio of document.querySelectorAll('input[name=view]')) {
    radio.addEventListener('change', () => { if (state.result) showResult(state.result); });
  }
  regionDrag();
  document.body.dataset.ready = 'yes';
}

start().catch((error) => showError(error.message));

/* The explorer (book/_ext/cnnbook_explorer.py): the book's two trained models, run in the
   reader's browser with TensorFlow.js on a sample test image or the reader's own.

   This file is all the page loads until the reader uses the explorer. Then, once, it loads
   TensorFlow.js (vendor/tfjs, served beside this file) and the models' export that the build
   wrote into _static/explorer (manifest.json, <model>.weights.bin, samples.bin: see
   cnnbook.explore), checks the weights' byte counts and sha256 against the manifest, and builds
   each model with tf.sequential from the manifest's layer list (the calculator's spec format;
   every convolution and every dense layer but the last is ReLU, the last gives the logits).
   WebGL where the browser has it, the CPU backend otherwise; the page says which.

   window.cnnbookExplorer.predict(model, pixels) and .activations(model, pixels), pixels a
   Uint8Array of 32*32*3 RGB bytes (height, width, channel), are the same computation the page
   shows; tests/test_browser.py compares them with Keras. */
(() => {
  'use strict';

  const SCRIPT = document.currentScript;
  const APP = new URL('.', SCRIPT ? SCRIPT.src : document.baseURI);
  const DATA = new URL('../explorer/', APP);
  const TFJS = new URL('vendor/tfjs/tf.min.js', APP);
  const SIZE = 32;
  const MAX_FILE_BYTES = 25 * 1024 * 1024; // a larger "image" is refused before it is read
  const MAX_PIXELS = 50e6; // ... and a decoded one with more pixels than this
  const PICTURES = new Set(['conv', 'maxpool']); // layers whose outputs are drawn
  const NUMBER = new Intl.NumberFormat('en');

  let loading = null; // the promise of the loaded models
  let state = null; // {tf, manifest, backend, models: {name: {spec, model, probe}}, samples}

  // ----------------------------------------------------------------------------- helpers
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : v);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  };
  const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)}\u00a0MiB`;
  const shapeText = (shape) => shape.join('\u00d7');
  const percent = (p) => `${(100 * p).toFixed(p >= 0.995 || p < 0.0005 ? 0 : 1)}\u00a0%`;

  class ExplorerError extends Error {}

  function loadScript(url) {
    return new Promise((resolve, reject) => {
      if (window.tf) { resolve(); return; }
      const s = document.createElement('script');
      s.src = url.href;
      s.onload = () => resolve();
      s.onerror = () => reject(new ExplorerError(`TensorFlow.js could not be loaded from ${url.pathname}.`));
      document.head.append(s);
    });
  }

  async function fetchBytes(url, what) {
    let response;
    try {
      response = await fetch(url);
    } catch (err) {
      throw new ExplorerError(`${what} could not be loaded (${err.message}); the explorer needs the book served by a web server, not opened as a file.`);
    }
    if (!response.ok) throw new ExplorerError(`${what} could not be loaded: HTTP ${response.status} for ${new URL(url).pathname}.`);
    return response.arrayBuffer();
  }

  async function sha256(buffer) {
    if (!(window.crypto && crypto.subtle)) return null; // not a secure context: sizes only
    const digest = await crypto.subtle.digest('SHA-256', buffer);
    return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
  }

  async function checked(buffer, record, what) {
    if (buffer.byteLength !== record.bytes) {
      throw new ExplorerError(`${what} has ${NUMBER.format(buffer.byteLength)} bytes where the manifest says ${NUMBER.format(record.bytes)}: the export is damaged or stale; rebuild the book.`);
    }
    const digest = await sha256(buffer);
    if (digest !== null && digest !== record.sha256) {
      throw new ExplorerError(`${what}'s sha256 is ${digest.slice(0, 12)}\u2026 where the manifest says ${record.sha256.slice(0, 12)}\u2026: the export is damaged or stale; rebuild the book.`);
    }
    return buffer;
  }

  function hasWebGL() {
    try {
      const canvas = document.createElement('canvas');
      return Boolean(canvas.getContext('webgl2') || canvas.getContext('webgl'));
    } catch (err) {
      return false;
    }
  }

  // ---------------------------------------------------------------- the models, from the manifest
  function buildModel(tf, spec, name) {
    const layers = spec.layers;
    if (!layers.length || layers[0].type !== 'input') throw new ExplorerError(`${name}: the layer list does not start with an input.`);
    const model = tf.sequential({ name });
    let inputShape = layers[0].shape;
    const first = () => {
      const extra = inputShape ? { inputShape } : {};
      inputShape = null;
      return extra;
    };
    layers.slice(1).forEach((L, i) => {
      const last = i === layers.length - 2;
      const padding = L.padding === 'same' ? 'same' : 'valid';
      if ((L.type === 'conv' || L.type === 'maxpool') && L.padding && !['same', 'valid'].includes(L.padding)) {
        model.add(tf.layers.zeroPadding2d({ padding: L.padding, name: `${L.name}_pad`, ...first() }));
      }
      if (L.type === 'conv') {
        if ((L.groups || 1) !== 1) throw new ExplorerError(`${L.name}: grouped convolutions are not supported by the explorer.`);
        model.add(tf.layers.conv2d({
          filters: L.filters, kernelSize: L.kernel, strides: L.stride, padding, useBias: L.bias,
          activation: 'relu', name: L.name, ...first(),
        }));
      } else if (L.type === 'maxpool') {
        model.add(tf.layers.maxPooling2d({ poolSize: L.pool, strides: L.stride, padding, name: L.name, ...first() }));
      } else if (L.type === 'flatten') {
        model.add(tf.layers.flatten({ name: L.name, ...first() }));
      } else if (L.type === 'dense') {
        model.add(tf.layers.dense({
          units: L.units, useBias: L.bias, activation: last ? 'linear' : 'relu', name: L.name, ...first(),
        }));
      } else {
        throw new ExplorerError(`${L.name}: the layer type ${L.type} is not supported by the explorer.`);
      }
    });
    return model;
  }

  function setWeights(tf, model, spec, buffer, name) {
    const records = spec.weights.tensors;
    const expected = model.weights.map((w) => w.shape.join(','));
    const given = records.map((t) => t.shape.join(','));
    if (expected.join(';') !== given.join(';')) {
      throw new ExplorerError(`${name}: the manifest's weight shapes (${given.join('; ')}) do not fit the model built from its layers (${expected.join('; ')}).`);
    }
    const tensors = records.map((t) => {
      if (t.offset + t.bytes > buffer.byteLength || t.bytes !== 4 * t.shape.reduce((a, b) => a * b, 1)) {
        throw new ExplorerError(`${name}: the weight ${t.layer}/${t.name} does not fit in ${spec.weights.file}.`);
      }
      return tf.tensor(new Float32Array(buffer.slice(t.offset, t.offset + t.bytes)), t.shape, 'float32');
    });
    model.setWeights(tensors);
    tensors.forEach((t) => t.dispose());
  }

  function load(progress) {
    if (loading) return loading;
    loading = (async () => {
      const t0 = performance.now();
      progress('Loading TensorFlow.js\u2026');
      await loadScript(TFJS);
      const tf = window.tf;
      tf.enableProdMode();
      const backend = hasWebGL() ? 'webgl' : 'cpu';
      if (!(await tf.setBackend(backend))) {
        if (backend === 'cpu' || !(await tf.setBackend('cpu'))) throw new ExplorerError('TensorFlow.js could not start a backend in this browser.');
      }
      await tf.ready();
      progress('Loading the models\u2019 manifest\u2026');
      const manifest = JSON.parse(new TextDecoder().decode(await fetchBytes(new URL('manifest.json', DATA), 'The models\u2019 manifest')));
      if (manifest.format !== 1) throw new ExplorerError(`The models' export has format ${manifest.format}; this explorer reads format 1. Rebuild the book.`);
      const names = Object.keys(manifest.models);
      let loaded = 0;
      const total = names.reduce((s, n) => s + manifest.models[n].weights.bytes, 0) + manifest.samples.bytes;
      const models = {};
      for (const name of names) {
        const spec = manifest.models[name];
        progress(`Loading the weights of ${spec.title} (${mib(loaded)} of ${mib(total)})\u2026`);
        const buffer = await checked(await fetchBytes(new URL(spec.weights.file, DATA), `${spec.weights.file}`), spec.weights, spec.weights.file);
        loaded += buffer.byteLength;
        const model = buildModel(tf, spec, name);
        setWeights(tf, model, spec, buffer, name);
        const probe = tf.model({ inputs: model.inputs, outputs: model.layers.map((l) => l.output) });
        const firstConv = spec.layers.find((L) => L.type === 'conv');
        const record = firstConv && spec.weights.tensors.find((t) => t.layer === firstConv.name && t.name === 'kernel');
        const kernel = record ? { record, data: new Float32Array(buffer.slice(record.offset, record.offset + record.bytes)) } : null;
        const shapes = model.layers.map((l) => l.outputShape.slice(1));
        const want = spec.shapes.slice(1);
        if (JSON.stringify(shapes) !== JSON.stringify(want)) {
          throw new ExplorerError(`${name}: the layers' output shapes in TensorFlow.js (${shapes.map(shapeText).join(', ')}) differ from the calculator's (${want.map(shapeText).join(', ')}).`);
        }
        models[name] = { spec, model, probe, kernel };
      }
      progress(`Loading the sample images (${mib(loaded)} of ${mib(total)})\u2026`);
      const samples = new Uint8Array(await checked(await fetchBytes(new URL(manifest.samples.file, DATA), 'The sample images'), manifest.samples, manifest.samples.file));
      state = { tf, manifest, backend: tf.getBackend(), models, samples, seconds: (performance.now() - t0) / 1000 };
      return state;
    })();
    loading.catch(() => { loading = null; }); // a failed start can be tried again
    return loading;
  }

  function checkPixels(pixels) {
    if (!(pixels instanceof Uint8Array) && !(pixels instanceof Uint8ClampedArray)) {
      throw new TypeError('pixels must be a Uint8Array of 32*32*3 RGB bytes');
    }
    if (pixels.length !== SIZE * SIZE * 3) throw new RangeError(`pixels must hold ${SIZE * SIZE * 3} bytes, not ${pixels.length}`);
  }

  function modelOf(s, name) {
    const m = s.models[name];
    if (!m) throw new RangeError(`unknown model ${JSON.stringify(name)}; use one of ${Object.keys(s.models).join(', ')}`);
    return m;
  }

  function input(s, pixels) {
    const { tf } = s;
    return tf.tidy(() => tf.tensor(Int32Array.from(pixels), [1, SIZE, SIZE, 3], 'int32').toFloat().div(s.manifest.input_scale));
  }

  async function runLogits(s, name, pixels) {
    const m = modelOf(s, name);
    const x = input(s, pixels);
    const y = m.model.predict(x);
    const data = await y.data();
    x.dispose(); y.dispose();
    return Array.from(data);
  }

  async function runActivations(s, name, pixels) {
    const m = modelOf(s, name);
    const x = input(s, pixels);
    const outputs = m.probe.predict(x);
    const data = await Promise.all(outputs.map((t) => t.data()));
    const result = m.model.layers.map((layer, i) => ({ name: layer.name, shape: outputs[i].shape.slice(1), data: data[i] }));
    x.dispose(); outputs.forEach((t) => t.dispose());
    return result;
  }

  const softmax = (logits) => {
    const top = Math.max(...logits);
    const e = logits.map((v) => Math.exp(v - top));
    const sum = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / sum);
  };

  // ----------------------------------------------------------------------------- drawing
  // A perceptually even colour scale (viridis, 9 stops), for the feature maps' heat maps.
  const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
  const LUT = (() => {
    const lut = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const x = (i / 255) * (VIRIDIS.length - 1);
      const k = Math.min(Math.floor(x), VIRIDIS.length - 2);
      const f = x - k;
      for (let c = 0; c < 3; c++) lut[3 * i + c] = VIRIDIS[k][c] + f * (VIRIDIS[k + 1][c] - VIRIDIS[k][c]);
    }
    return lut;
  })();

  function tileColumns(channels) {
    if (channels <= 12) return channels;
    for (const c of [12, 16, 8]) if (channels % c === 0) return c;
    return 12;
  }

  // Every channel of an [h, w, c] activation as one heat map, tiled on one canvas (1-pixel gaps).
  function drawMaps(canvas, shape, data) {
    const [h, w, c] = shape;
    const cols = tileColumns(c);
    const rows = Math.ceil(c / cols);
    const W = cols * (w + 1) - 1;
    const H = rows * (h + 1) - 1;
    if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
    const ctx = canvas.getContext('2d');
    const image = ctx.createImageData(W, H);
    const px = image.data; // transparent gaps
    let top = 0;
    for (let i = 0; i < data.length; i++) if (data[i] > top) top = data[i];
    const scale = top > 0 ? 255 / top : 0;
    for (let ch = 0; ch < c; ch++) {
      const ox = (ch % cols) * (w + 1);
      const oy = Math.floor(ch / cols) * (h + 1);
      for (let y = 0; y < h; y++) {
        let o = 4 * ((oy + y) * W + ox);
        let d = (y * w) * c + ch;
        for (let x = 0; x < w; x++, o += 4, d += c) {
          const v = data[d] > 0 ? Math.min(255, Math.round(data[d] * scale)) : 0;
          px[o] = LUT[3 * v]; px[o + 1] = LUT[3 * v + 1]; px[o + 2] = LUT[3 * v + 2]; px[o + 3] = 255;
        }
      }
    }
    ctx.putImageData(image, 0, 0);
    return top;
  }

  // The first convolution's filters, [kh, kw, 3, n], as n colour patches: one scale for all,
  // symmetric about zero (mid-grey), so a patch's colour is the colour it responds to.
  function drawFilters(canvas, kernel, shape) {
    const [kh, kw, cin, n] = shape;
    let top = 0;
    for (const v of kernel) top = Math.max(top, Math.abs(v));
    const lo = -top; const hi = top;
    const cols = tileColumns(n);
    const rows = Math.ceil(n / cols);
    const W = cols * (kw + 1) - 1;
    const H = rows * (kh + 1) - 1;
    canvas.width = W; canvas.height = H;
    const ctx = canvas.getContext('2d');
    const image = ctx.createImageData(W, H);
    const scale = hi > lo ? 255 / (hi - lo) : 0;
    for (let f = 0; f < n; f++) {
      const ox = (f % cols) * (kw + 1);
      const oy = Math.floor(f / cols) * (kh + 1);
      for (let y = 0; y < kh; y++) {
        for (let x = 0; x < kw; x++) {
          const o = 4 * ((oy + y) * W + ox + x);
          for (let c = 0; c < 3; c++) {
            const v = cin === 3 ? kernel[((y * kw + x) * cin + c) * n + f] : kernel[((y * kw + x) * cin) * n + f];
            image.data[o + c] = (v - lo) * scale;
          }
          image.data[o + 3] = 255;
        }
      }
    }
    ctx.putImageData(image, 0, 0);
  }

  function drawPixels(canvas, pixels) {
    canvas.width = SIZE; canvas.height = SIZE;
    const ctx = canvas.getContext('2d');
    const image = ctx.createImageData(SIZE, SIZE);
    for (let i = 0, o = 0; i < pixels.length; i += 3, o += 4) {
      image.data[o] = pixels[i]; image.data[o + 1] = pixels[i + 1]; image.data[o + 2] = pixels[i + 2]; image.data[o + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
  }

  // ------------------------------------------------------------------------ the reader's image
  async function pixelsFromFile(file) {
    if (!file) throw new ExplorerError('No file came with that: choose, drop or paste an image.');
    if (file.size === 0) throw new ExplorerError(`${file.name || 'The file'} is empty.`);
    if (file.size > MAX_FILE_BYTES) {
      throw new ExplorerError(`${file.name || 'The file'} is ${mib(file.size)}; the explorer takes images up to ${mib(MAX_FILE_BYTES)}.`);
    }
    if (file.type && !file.type.startsWith('image/')) {
      throw new ExplorerError(`${file.name || 'The file'} is not an image (${file.type}): choose a PNG, JPEG, GIF, WebP or BMP file.`);
    }
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
    } catch (err) {
      throw new ExplorerError(`${file.name || 'The file'} is not an image this browser can read.`);
    }
    const { width, height } = bitmap;
    if (!width || !height) throw new ExplorerError(`${file.name || 'The file'} has no pixels.`);
    if (width * height > MAX_PIXELS) {
      bitmap.close();
      throw new ExplorerError(`${file.name || 'The image'} has ${width}\u00d7${height} pixels; the explorer takes up to ${NUMBER.format(MAX_PIXELS / 1e6)} million.`);
    }
    // centre-crop to a square, then scale to 32x32 (the browser's high-quality resampling)
    const side = Math.min(width, height);
    const sx = Math.floor((width - side) / 2);
    const sy = Math.floor((height - side) / 2);
    let small = bitmap;
    if (side !== SIZE || width !== height) {
      small = await createImageBitmap(bitmap, sx, sy, side, side, { resizeWidth: SIZE, resizeHeight: SIZE, resizeQuality: 'high' });
      bitmap.close();
    }
    const canvas = document.createElement('canvas');
    canvas.width = SIZE; canvas.height = SIZE;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.fillStyle = '#fff'; // transparent parts are seen on white
    ctx.fillRect(0, 0, SIZE, SIZE);
    ctx.drawImage(small, 0, 0);
    small.close();
    const rgba = ctx.getImageData(0, 0, SIZE, SIZE).data;
    const pixels = new Uint8Array(SIZE * SIZE * 3);
    for (let i = 0, o = 0; o < rgba.length; i += 3, o += 4) {
      pixels[i] = rgba[o]; pixels[i + 1] = rgba[o + 1]; pixels[i + 2] = rgba[o + 2];
    }
    return { pixels, description: `${file.name || 'your image'}, ${width}\u00d7${height}${width !== height || side !== SIZE ? `, centre-cropped to ${side}\u00d7${side} and scaled to ${SIZE}\u00d7${SIZE}` : ''}` };
  }

  // ------------------------------------------------------------------------------- the widget
  class Explorer {
    constructor(root, index) {
      this.root = root;
      this.id = `cnnbook-explorer-${index}`;
      this.model = 'conv';
      this.sample = null;
      this.pixels = null;
      root.textContent = '';
      root.classList.add('cnnbook-explorer--js');
      this.status = el('p', { class: 'cnnbook-explorer__status', role: 'status', 'aria-live': 'polite' });
      this.error = el('p', { class: 'cnnbook-explorer__error', role: 'alert', hidden: true });
      this.start = el('button', { type: 'button', class: 'cnnbook-explorer__start', onclick: () => this.begin() }, 'Start the explorer');
      this.file = el('input', { type: 'file', accept: 'image/*', id: `${this.id}-file`, class: 'cnnbook-explorer__file' });
      this.file.addEventListener('change', () => { if (this.file.files.length) this.useFile(this.file.files[0]); this.file.value = ''; });
      const drop = el('div', { class: 'cnnbook-explorer__drop' },
        el('label', { for: this.file.id }, 'Your own image: '), this.file,
        el('span', { class: 'cnnbook-explorer__hint' }, ' or drop one here, or paste one (Ctrl+V or \u2318V).'));
      this.head = el('div', { class: 'cnnbook-explorer__head' },
        el('p', { class: 'cnnbook-explorer__title' }, 'The explorer: both trained models, in your browser'),
        el('p', { class: 'cnnbook-explorer__intro' },
          'Pick a test image or bring your own: both networks classify it here, with TensorFlow.js, and you see what every convolution and pooling layer makes of it. Starting it loads TensorFlow.js and both models\u2019 weights (several megabytes), once.'),
        this.start, drop, this.status, this.error);
      this.body = el('div', { class: 'cnnbook-explorer__body', hidden: true });
      root.append(this.head, this.body);
      root.addEventListener('dragover', (e) => { e.preventDefault(); root.classList.add('cnnbook-explorer--drag'); });
      root.addEventListener('dragleave', (e) => { if (!root.contains(e.relatedTarget)) root.classList.remove('cnnbook-explorer--drag'); });
      root.addEventListener('drop', (e) => {
        e.preventDefault();
        root.classList.remove('cnnbook-explorer--drag');
        const files = e.dataTransfer && e.dataTransfer.files;
        this.useFile(files && files.length ? files[0] : null);
      });
      document.addEventListener('paste', (e) => {
        const items = [...((e.clipboardData && e.clipboardData.items) || [])].filter((i) => i.kind === 'file');
        if (!items.length) return;
        e.preventDefault();
        this.useFile(items[0].getAsFile());
      });
      root.dataset.state = 'idle';
    }

    showError(message) {
      this.error.textContent = message;
      this.error.hidden = false;
    }

    clearError() {
      this.error.textContent = '';
      this.error.hidden = true;
    }

    async ready() {
      if (this.built) return state;
      this.root.dataset.state = 'loading';
      this.start.disabled = true;
      this.status.classList.add('cnnbook-explorer__status--busy');
      try {
        const s = await load((text) => { this.status.textContent = text; });
        if (!this.built) this.build(s); // once, even when two uses overlap
        this.built = true;
        return s;
      } catch (err) {
        this.root.dataset.state = 'error';
        this.start.disabled = false;
        this.status.textContent = '';
        this.showError(err instanceof ExplorerError ? err.message : `The explorer could not start: ${err.message}`);
        if (!(err instanceof ExplorerError)) console.error(err);
        return null;
      } finally {
        this.status.classList.remove('cnnbook-explorer__status--busy');
      }
    }

    async begin() {
      const s = await this.ready();
      if (!s) return;
      // the start button is gone: the keyboard goes on from the sample images
      if (document.activeElement === this.start || document.activeElement === document.body) this.thumbs[0].focus();
      if (this.pixels === null) await this.chooseSample(0);
    }

    async useFile(file) {
      this.clearError();
      let picked;
      try {
        picked = await pixelsFromFile(file);
      } catch (err) {
        this.showError(err instanceof ExplorerError ? err.message : `That image could not be read: ${err.message}`);
        return;
      }
      if (!(await this.ready())) return;
      this.sample = null;
      this.updateGrid();
      await this.show(picked.pixels, `Your image: ${picked.description}.`, null);
    }

    async chooseSample(index) {
      this.clearError();
      const s = await this.ready();
      if (!s) return;
      this.sample = index;
      this.updateGrid();
      const n = SIZE * SIZE * 3;
      const label = s.manifest.samples.labels[index];
      const test = s.manifest.samples.test_indices[index];
      await this.show(s.samples.slice(index * n, (index + 1) * n),
        `Sample ${index + 1} of ${s.manifest.samples.count}: test image ${NUMBER.format(test)}, true label \u201c${s.manifest.classes[label]}\u201d.`, label);
    }

    // -- the page, built once the models are loaded
    build(s) {
      const m = s.manifest;
      const names = Object.keys(s.models);
      const where = s.backend === 'webgl' ? 'its WebGL backend' : 'its CPU backend (this browser offers no WebGL)';
      this.status.textContent = `Loaded in ${s.seconds.toFixed(1)}\u00a0s. TensorFlow.js ${s.tf.version.tfjs} runs the models with ${where}.`;
      this.root.dataset.backend = s.backend;
      this.start.hidden = true;
      const parts = [];
      if (m.preview) {
        const acc = names.map((n) => `${percent(s.models[n].spec.test_accuracy)} for ${s.models[n].spec.title}`).join(', ');
        const images = s.models[names[0]].spec.provenance.train_images;
        parts.push(el('p', { class: 'cnnbook-explorer__preview' },
          el('strong', {}, 'Preview models. '),
          `This build used the ${m.profile} profile: the models trained on ${images ? NUMBER.format(images) : 'a few'} images only, so their predictions are close to guesses (test accuracy ${acc}). A build with the full profile puts the fully trained models here.`));
      }
      // the sample images: a radio group, one row per class, arrow keys move
      this.grid = el('div', { class: 'cnnbook-explorer__grid', role: 'radiogroup', 'aria-label': 'Sample test images, one row per class' });
      this.thumbs = [];
      const thumb = document.createElement('canvas');
      thumb.getContext('2d', { willReadFrequently: true }); // read back 100 times (toDataURL)
      const n = SIZE * SIZE * 3;
      const perRow = Math.max(1, Math.round(m.samples.count / m.classes.length));
      // (class dark-light: the theme leaves them undimmed in dark mode, as the networks see them)
      for (let i = 0; i < m.samples.count; i++) {
        drawPixels(thumb, s.samples.subarray(i * n, (i + 1) * n));
        const cls = m.classes[m.samples.labels[i]];
        const b = el('button', {
          type: 'button', role: 'radio', 'aria-checked': 'false', tabindex: i === 0 ? '0' : '-1',
          class: 'cnnbook-explorer__thumb', 'data-index': String(i), 'aria-label': `${cls}, sample ${(i % perRow) + 1}`,
          onclick: () => this.chooseSample(i),
        }, el('img', { src: thumb.toDataURL(), alt: '', width: SIZE, height: SIZE, class: 'dark-light' }));
        b.addEventListener('keydown', (e) => this.gridKey(e, i, perRow));
        this.thumbs.push(b);
        this.grid.append(b);
      }
      const samplesBox = el('div', { class: 'cnnbook-explorer__samples' },
        el('p', { class: 'cnnbook-explorer__label', id: `${this.id}-samples` }, `Sample test images (${m.samples.count}, ${perRow} per class)`), this.grid);
      this.grid.setAttribute('aria-labelledby', `${this.id}-samples`);
      this.grid.removeAttribute('aria-label');

      // what the network sees
      this.seen = el('canvas', { class: 'cnnbook-explorer__seen', role: 'img', 'aria-label': 'The 32 by 32 image the networks see' });
      this.seen.getContext('2d', { willReadFrequently: true }); // small, and readable as it is shown
      this.caption = el('p', { class: 'cnnbook-explorer__caption' });
      const seenBox = el('figure', { class: 'cnnbook-explorer__seenbox' }, this.seen,
        el('figcaption', {}, el('strong', {}, `What the networks see: ${SIZE}\u00d7${SIZE} pixels.`), ' ', this.caption));

      // the predictions: one row per class, one bar per model
      const head = el('tr', {}, el('th', { scope: 'col' }, 'Class'),
        ...names.map((nm) => el('th', { scope: 'col' }, s.models[nm].spec.title)));
      this.rows = m.classes.map((cls, k) => el('tr', { 'data-class': String(k) }, el('th', { scope: 'row' }, cls),
        ...names.map((nm) => el('td', { 'data-model': nm },
          el('span', { class: 'cnnbook-explorer__bar', 'aria-hidden': 'true' }, el('span', { class: 'cnnbook-explorer__fill' })),
          el('span', { class: 'cnnbook-explorer__p' }, '')))));
      this.table = el('table', { class: 'cnnbook-explorer__predictions' },
        el('caption', {}, 'Each model\u2019s probability for each class (the softmax of its ten logits); ', el('strong', {}, 'bold'), ': its prediction; \u2713: the true label'),
        el('thead', {}, head), el('tbody', {}, ...this.rows));

      // the chosen model's layers
      const choice = el('fieldset', { class: 'cnnbook-explorer__choice' }, el('legend', {}, 'Filters and feature maps of'));
      names.forEach((nm) => {
        const radio = el('input', { type: 'radio', name: `${this.id}-model`, value: nm, id: `${this.id}-model-${nm}`, checked: nm === this.model });
        radio.addEventListener('change', () => { if (radio.checked) this.chooseModel(nm); });
        choice.append(el('span', { class: 'cnnbook-explorer__option' }, radio, el('label', { for: radio.id }, s.models[nm].spec.title)));
      });
      this.layers = el('div', { class: 'cnnbook-explorer__layers' });
      parts.push(samplesBox, el('div', { class: 'cnnbook-explorer__result' }, seenBox,
        el('div', { class: 'cnnbook-explorer__scroll', role: 'region', tabindex: '0', 'aria-label': 'Predictions (scrolls sideways)' }, this.table)),
      choice, this.layers);
      this.body.append(...parts);
      this.body.hidden = false;
      this.drawLayers(s);
      this.root.dataset.state = 'ready';
    }

    gridKey(e, i, perRow) {
      const count = this.thumbs.length;
      const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow, ArrowUp: -perRow, Home: -i, End: count - 1 - i };
      if (!(e.key in moves)) return;
      e.preventDefault();
      const j = Math.min(count - 1, Math.max(0, i + moves[e.key]));
      this.thumbs[j].focus();
      this.chooseSample(j);
    }

    updateGrid() {
      (this.thumbs || []).forEach((b, i) => {
        const on = i === this.sample;
        b.setAttribute('aria-checked', String(on));
        b.tabIndex = on || (this.sample === null && i === 0) ? 0 : -1;
      });
    }

    chooseModel(name) {
      this.model = name;
      this.drawLayers(state);
      if (this.pixels) this.show(this.pixels, this.caption.textContent, this.label);
    }

    // one figure per convolution and pooling layer of the chosen model, and the first filters
    drawLayers(s) {
      const m = s.models[this.model];
      const { layers, shapes } = m.spec;
      this.layers.textContent = '';
      this.maps = {};
      const blocks = [];
      if (m.kernel) {
        const { record, data: kernel } = m.kernel;
        const L = { name: record.layer };
        const canvas = el('canvas', { class: 'cnnbook-explorer__filters', role: 'img', 'aria-label': `The ${record.shape[3]} filters of ${L.name}, ${record.shape[0]} by ${record.shape[1]} pixels each, as colour patches` });
        drawFilters(canvas, kernel, record.shape);
        blocks.push(el('figure', { class: 'cnnbook-explorer__layer' }, canvas,
          el('figcaption', {}, el('strong', {}, `${L.name}\u2019s ${record.shape[3]} filters`), ` (${record.shape[0]}\u00d7${record.shape[1]}\u00d7${record.shape[2]} weights each), as colour patches: one scale for all, mid-grey is zero.`)));
      }
      layers.forEach((L, i) => {
        if (!PICTURES.has(L.type)) return;
        const shape = shapes[i];
        const canvas = el('canvas', { class: 'cnnbook-explorer__maps', role: 'img', 'aria-label': `${L.name}: ${shape[2]} feature maps of ${shape[0]} by ${shape[1]}` });
        const note = el('span', { class: 'cnnbook-explorer__max' });
        this.maps[L.name] = { canvas, note, shape };
        blocks.push(el('figure', { class: 'cnnbook-explorer__layer', 'data-layer': L.name, 'data-shape': shape.join(',') }, canvas,
          el('figcaption', {}, el('strong', {}, `${L.name}`), ` (${L.type === 'conv' ? `convolution ${L.kernel}\u00d7${L.kernel}` : `max pooling ${L.pool}\u00d7${L.pool}`}, stride ${L.stride}): output ${shapeText(shape)}, one heat map per channel`, note)));
      });
      this.layers.append(el('p', { class: 'cnnbook-explorer__legend' },
        `${m.spec.title}: the first layer\u2019s filters, then every convolution and pooling layer\u2019s output. Dark violet is zero, yellow the layer\u2019s largest value for this image.`), ...blocks);
    }

    // The image is shown at once; the models run on the latest choice only (a reader who
    // moves through the samples with the arrow keys does not queue one run per image).
    async show(pixels, caption, label) {
      this.pixels = pixels;
      this.label = label;
      drawPixels(this.seen, pixels);
      this.caption.textContent = caption;
      this.pending = { pixels, label, model: this.model, t0: performance.now() };
      this.root.dataset.state = 'running';
      if (this.busy) return;
      this.busy = true;
      try {
        while (this.pending) {
          const job = this.pending;
          this.pending = null;
          if (!(await this.compute(job))) { this.pending = null; return; }
        }
        this.root.dataset.state = 'shown';
      } finally {
        this.busy = false;
      }
    }

    async compute(job) {
      const s = state;
      const names = Object.keys(s.models);
      let logits; let acts;
      try {
        acts = await runActivations(s, job.model, job.pixels);
        logits = {};
        for (const nm of names) logits[nm] = nm === job.model ? Array.from(acts[acts.length - 1].data) : await runLogits(s, nm, job.pixels);
      } catch (err) {
        this.root.dataset.state = 'error';
        this.showError(`The models could not run: ${err.message}`);
        console.error(err);
        return false;
      }
      if (this.pending) return true; // a newer choice is waiting: draw that one
      names.forEach((nm) => {
        const p = softmax(logits[nm]);
        const best = p.indexOf(Math.max(...p));
        this.rows.forEach((row, k) => {
          const td = row.querySelector(`td[data-model="${nm}"]`);
          td.dataset.logit = String(logits[nm][k]);
          td.querySelector('.cnnbook-explorer__fill').style.width = `${(100 * p[k]).toFixed(2)}%`;
          td.querySelector('.cnnbook-explorer__p').textContent = percent(p[k]);
          td.classList.toggle('cnnbook-explorer__best', k === best);
        });
      });
      this.rows.forEach((row, k) => {
        const on = job.label !== null && job.label === k;
        row.classList.toggle('cnnbook-explorer__true', on);
        const th = row.querySelector('th');
        th.textContent = `${s.manifest.classes[k]}${on ? ' \u2713' : ''}`;
        if (on) th.append(el('span', { class: 'cnnbook-explorer__sr' }, ' (true label)'));
      });
      for (const a of acts) {
        const shown = this.maps[a.name];
        if (!shown) continue;
        if (a.shape.join(',') !== shown.shape.join(',')) {
          this.showError(`${a.name}: TensorFlow.js gives ${shapeText(a.shape)}, the calculator ${shapeText(shown.shape)}.`);
          continue;
        }
        const top = drawMaps(shown.canvas, a.shape, a.data);
        shown.note.textContent = top > 0 ? ` (largest value ${top.toPrecision(3)})` : ' (all zero for this image)';
      }
      const ms = performance.now() - job.t0;
      this.root.dataset.ms = ms.toFixed(1);
      this.root.dispatchEvent(new CustomEvent('cnnbook-explorer-shown', { detail: { ms } }));
      return true;
    }
  }

  // -------------------------------------------------------------------------------- the API
  const api = {
    async predict(model, pixels) {
      checkPixels(pixels);
      const s = await load(() => {});
      return runLogits(s, model, pixels);
    },
    async activations(model, pixels) {
      checkPixels(pixels);
      const s = await load(() => {});
      return (await runActivations(s, model, pixels)).map((a) => ({ name: a.name, shape: a.shape, data: a.data }));
    },
    get backend() { return state ? state.backend : null; },
    get manifest() { return state ? state.manifest : null; },
  };
  window.cnnbookExplorer = api;

  const start = () => document.querySelectorAll('.cnnbook-explorer').forEach((root, i) => new Explorer(root, i));
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();

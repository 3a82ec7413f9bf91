/*
 * The calculators' widgets: they find <div class="cnnbook-calc" data-widget="model|time"> in a
 * page and draw an editable form there. All arithmetic is CnnbookCalc's (calc-core.js); the
 * presets and machines come from window.CNNBOOK_CALC (generated at build time from cnnbook.calc).
 *
 *   <div class="cnnbook-calc" data-widget="model" data-preset="alexnet"></div>
 *   <div class="cnnbook-calc" data-widget="time" data-preset="alexnet" data-machine="i3-540"></div>
 *
 * book/_ext/cnnbook_calc.py's {cnnbook-calculator} directive writes these divs, with the preset's
 * numbers as plain tables inside (div.cnnbook-calc__fallback, for readers without JavaScript),
 * which a widget removes when it starts.
 *
 * Bad input never reaches a result: each message appears next to its field (aria-invalid and
 * aria-describedby tie them together) and the results it would change show a dash.
 */
(function () {
  "use strict";

  let uid = 0;
  const DASH = "\u2014";
  const TYPES = ["conv", "maxpool", "lrn", "batchnorm", "dropout", "gap", "flatten", "dense"];
  const TYPE_LABELS = { conv: "conv", maxpool: "max pool", lrn: "LRN", batchnorm: "batch norm", dropout: "dropout",
    gap: "global avg pool", flatten: "flatten", dense: "dense" };
  // Table columns that hold a layer's fields: column -> field, for each layer type.
  const COLUMNS = {
    n: { conv: "filters", dense: "units" },
    k: { conv: "kernel", maxpool: "pool", lrn: "size" },  // an LRN's size: channels it spans
    stride: { conv: "stride", maxpool: "stride" },
    padding: { conv: "padding", maxpool: "padding" },
    groups: { conv: "groups" },
  };
  const COLUMN_LABELS = { n: "Filters / units", k: "Kernel / pool", stride: "Stride", padding: "Padding", groups: "Groups" };
  const NEW_LAYER = {  // what an inserted layer, or a changed type, starts with
    conv: { filters: "32", kernel: "3", stride: "1", padding: "same", groups: "1" },
    maxpool: { pool: "2", stride: "2", padding: "valid" },
    lrn: { size: "5" },
    batchnorm: {},
    dropout: {},
    gap: {},
    flatten: {},
    dense: { units: "64" },
  };
  const MEMORY_PARTS = ["weights", "gradients", "optimizer state", "activations", "input batch"];

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function nextId(prefix) {
    uid += 1;
    return `cnnbook-calc-${prefix}-${uid}`;
  }

  // ------------------------------------------------------------------------------ formatting
  function bytesText(bytes) {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let value = Number(bytes);
    if (value < 1024) return `${CnnbookCalc.group(bytes)}\u00a0bytes`;
    let i = 0;
    while (value >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
    const shown = value >= 1e6 ? value.toExponential(2) : value.toFixed(value >= 100 ? 0 : 1);
    return `${shown}\u00a0${units[i]}`;
  }

  function secondsText(s) {
    const sig = (x) => (x >= 1e6 ? x.toExponential(2) : x >= 100 ? Math.round(x).toLocaleString("en-US") : x.toPrecision(3));
    if (s < 120) return `${sig(s)}\u00a0s`;
    if (s < 2 * 3600) return `${sig(s / 60)}\u00a0min`;
    if (s < 2 * 86400) return `${sig(s / 3600)}\u00a0hours`;
    if (s < 2 * 365.25 * 86400) return `${sig(s / 86400)}\u00a0days`;
    return `${sig(s / (365.25 * 86400))}\u00a0years`;
  }

  function secondsExact(s) {
    return s < 1e15 ? `${Math.round(s).toLocaleString("en-US")}\u00a0s` : `${s.toExponential(3)}\u00a0s`;
  }

  function flopsText(x) {
    const n = Number(x);
    const units = [[1e18, "EFLOP"], [1e15, "PFLOP"], [1e12, "TFLOP"], [1e9, "GFLOP"], [1e6, "MFLOP"]];
    for (const [size, unit] of units) if (n >= size) return `${(n / size).toPrecision(3)}\u00a0${unit}`;
    return `${CnnbookCalc.group(BigInt(Math.round(n)))}\u00a0FLOP`;
  }

  // ------------------------------------------------------------------------------ parsing
  // Each parser returns {value} or {error}; `what` is the field's name in the message.
  function parseWhole(text, what) {
    const t = String(text).trim();
    if (t === "") return { error: `${what} is empty; enter a whole number.` };
    if (/^[+-]?\d+$/.test(t)) return { value: BigInt(t) };
    return { error: `${what} must be a whole number, got ${t}.` };
  }

  function parseNumber(text, what) {
    const t = String(text).trim();
    if (t === "") return { error: `${what} is empty; enter a number.` };
    if (/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) return { value: Number(t) };
    return { error: `${what} must be a number, got ${t}.` };
  }

  function parsePadding(text, what) {
    const t = String(text).trim();
    if (t === "") return { error: `${what} is empty; enter valid, same or a whole number.` };
    if (t === "valid" || t === "same") return { value: t };
    if (/^[+-]?\d+$/.test(t)) return { value: BigInt(t) };
    return { value: t };  // calc-core names it: unknown padding '...'
  }

  // ------------------------------------------------------------------------------ shared bits
  class Field {
    /* A labelled input or select with its own message line below it. */
    constructor(key, label, { value = "", options = null, inputmode = "numeric", hint = null, onchange } = {}) {
      this.key = key;
      this.id = nextId(key.replace(/\W/g, "-"));
      this.msgId = `${this.id}-msg`;
      const common = { id: this.id, name: key, "data-field": key, "aria-describedby": this.msgId };
      if (options) {
        this.input = h("select", common, options.map(([v, text]) => h("option", { value: v, text })));
        this.input.value = value;
      } else {
        this.input = h("input", { ...common, type: "text", inputmode, autocomplete: "off", spellcheck: "false", value });
      }
      this.input.addEventListener(options ? "change" : "input", onchange);
      this.message = h("span", { id: this.msgId, class: "cnnbook-calc__msg", "data-message-for": key });
      this.node = h("div", { class: "cnnbook-calc__field" },
        h("label", { for: this.id, text: label }), this.input,
        hint ? h("span", { class: "cnnbook-calc__hint", text: hint }) : null, this.message);
    }

    get value() { return this.input.value; }
    set value(v) { this.input.value = v; }

    show(error) {
      this.message.textContent = error || "";
      this.input.classList.toggle("cnnbook-calc__bad", Boolean(error));
      if (error) this.input.setAttribute("aria-invalid", "true");
      else this.input.removeAttribute("aria-invalid");
    }
  }

  function output(key, attrs = {}) {
    return h("output", { class: "cnnbook-calc__value", "data-total": key, "aria-live": "off", ...attrs }, DASH);
  }

  function setValue(node, value, text) {
    node.textContent = text;
    node.dataset.value = value === null ? "" : String(value);
  }

  function presetOptions(d) {
    return Object.entries(d.presets).map(([key, p]) => [key, p.title]);
  }

  // ------------------------------------------------------------------------------ model widget
  class ModelWidget {
    constructor(root, d) {
      this.root = root;
      this.d = d;
      const preset = root.dataset.preset || "alexnet";
      if (!d.presets[preset]) throw new Error(`unknown data-preset "${preset}"; use one of ${Object.keys(d.presets).join(", ")}`);
      const update = () => this.update();
      const defaults = d.defaults;
      this.shape = ["height", "width", "channels"].map((part, i) =>
        new Field(`shape-${i}`, `Input ${part}`, { onchange: update }));
      this.dtype = new Field("dtype", "Number type (dtype)", {
        value: defaults.dtype, onchange: update,
        options: Object.entries(d.dtype_bytes).map(([k, b]) => [k, `${k} (${b} byte${b > 1 ? "s" : ""})`]),
      });
      this.batch = new Field("batch_size", "Batch size", { value: String(defaults.batch_size), onchange: update });
      this.optimizer = new Field("optimizer", "Optimizer", {
        value: defaults.optimizer, onchange: update,
        options: Object.entries(d.optimizer_slots).map(([k, n]) => [k, `${k} (${n} slot${n === 1 ? "" : "s"})`]),
        hint: "slots: values of state kept per parameter",
      });
      this.ram = new Field("ram_gib", "Free memory (GiB)", { value: String(defaults.ram_gib), inputmode: "decimal", onchange: update });

      const titleId = nextId("title");
      this.presetButtons = Object.entries(d.presets).map(([key, p]) =>
        h("button", { type: "button", class: "cnnbook-calc__preset", "data-preset": key, "aria-pressed": "false",
          onclick: () => this.load(key), text: p.title }));
      this.totals = { params: output("params"), activations: output("activations"), macs: output("macs") };
      this.status = h("p", { class: "cnnbook-calc__status", role: "status", "aria-live": "polite" });
      this.summary = {};
      const summaryRows = [
        ["params", "Parameters (all, as Keras counts them)"], ["weights", "Weights"], ["biases", "Biases"],
        ["non_trainable", "Non-trainable (batch norm's moving means and variances)"],
        ["activations", "Activations per image (values stored)"], ["activation_bytes", "Activation memory per image"],
        ["macs", "Multiply-accumulates per image (forward)"], ["flops", "FLOPs per image (forward, 2 per MAC)"],
        ["param_bytes", "Parameter memory"],
      ];
      const memoryRows = MEMORY_PARTS.map((part) => [part, part[0].toUpperCase() + part.slice(1)]);
      this.memory = {};
      this.largest = h("output", { class: "cnnbook-calc__value", "data-largest-batch": "" }, DASH);
      this.edit = h("tbody");
      this.tbody = h("tbody");
      const editTable = h("table", { class: "cnnbook-calc__layers" },
        h("caption", { text: "Layers: edit any field; everything below updates as you type." }),
        h("thead", {}, h("tr", {},
          ["Layer", "Type", "Filters / units", "Kernel / pool", "Stride", "Padding", "Groups", "Output", "Edit"]
            .map((t) => h("th", { scope: "col", text: t })))),
        this.edit);
      const resultTable = h("table", { class: "cnnbook-calc__perlayer" },
        h("caption", { text: "Per layer, for one image" }),
        h("thead", {}, h("tr", {},
          ["Layer", "Output", "Parameters", "Activations", "MACs", "Receptive field", "Jump"]
            .map((t) => h("th", { scope: "col", text: t })))),
        this.tbody,
        h("tfoot", {}, h("tr", {},
          h("th", { scope: "row", text: "Total" }),
          h("td", { class: "cnnbook-calc__total-output", "data-label": "output" }),
          h("td", { class: "num", "data-label": "parameters" }, this.totals.params),
          h("td", { class: "num", "data-label": "activations" }, this.totals.activations),
          h("td", { class: "num", "data-label": "MACs" }, this.totals.macs),
          h("td", { class: "cnnbook-calc__unused" }), h("td", { class: "cnnbook-calc__unused" }))));
      root.append(
        h("section", { class: "cnnbook-calc__box", "aria-labelledby": titleId },
          h("p", { class: "cnnbook-calc__title", id: titleId, text: "Model calculator" }),
          h("div", { class: "cnnbook-calc__presets", role: "group", "aria-label": "Presets" },
            h("span", { class: "cnnbook-calc__presets-label", text: "Start from:" }), this.presetButtons),
          h("div", { class: "cnnbook-calc__grid" },
            this.shape.map((f) => f.node), this.dtype.node, this.batch.node, this.optimizer.node, this.ram.node),
          h("div", { class: "cnnbook-calc__scroll", role: "region", tabindex: "0", "aria-label": "Layers (scrolls sideways)" }, editTable),
          this.status,
          h("div", { class: "cnnbook-calc__scroll", role: "region", tabindex: "0", "aria-label": "Per-layer results (scrolls sideways)" }, resultTable),
          h("div", { class: "cnnbook-calc__results" },
            h("table", { class: "cnnbook-calc__summary" },
              h("caption", { text: "Totals per image" }),
              h("tbody", {}, summaryRows.map(([key, label]) => {
                this.summary[key] = output(key);
                return h("tr", {}, h("th", { scope: "row", text: label }), h("td", { class: "num" }, this.summary[key]));
              }))),
            h("table", { class: "cnnbook-calc__memory" },
              h("caption", { text: "Training memory for one step (batch size, optimizer and dtype above)" }),
              h("tbody", {},
                memoryRows.map(([key, label]) => {
                  this.memory[key] = h("output", { class: "cnnbook-calc__value", "data-memory": key }, DASH);
                  return h("tr", {}, h("th", { scope: "row", text: label }), h("td", { class: "num" }, this.memory[key]));
                }),
                h("tr", { class: "cnnbook-calc__sum" }, h("th", { scope: "row", text: "Total" }),
                  h("td", { class: "num" }, this.memory.total = h("output", { class: "cnnbook-calc__value", "data-memory": "total" }, DASH))),
                h("tr", {}, h("th", { scope: "row", text: "Largest batch that fits in the memory above" }),
                  h("td", { class: "num" }, this.largest)))))));
      this.load(preset);
    }

    load(key) {
      const layers = this.d.presets[key].layers;
      this.preset = key;
      for (const b of this.presetButtons) b.setAttribute("aria-pressed", String(b.dataset.preset === key));
      const dims = layers[0].shape.length === 3 ? layers[0].shape : [1, 1, layers[0].shape[0]];
      this.flatInput = layers[0].shape.length === 1;
      this.shape.forEach((f, i) => { f.value = String(dims[i]); });
      this.inputName = layers[0].name || "input";
      this.layers = layers.slice(1).map((spec) => {
        const row = { type: spec.type, name: spec.name || "", bias: spec.bias !== undefined ? spec.bias : true, values: {}, kept: {} };
        const edited = new Set(Object.values(COLUMNS).map((c) => c[spec.type]));
        for (const [k, v] of Object.entries(spec)) {
          if (["type", "name", "bias"].includes(k)) continue;
          if (edited.has(k)) row.values[k] = v === null ? "" : String(v);
          else row.kept[k] = v;  // no column for it (a dropout's rate, keepdims): kept as it is
        }
        return row;
      });
      this.render();
    }

    /* The specs as calc-core reads them, and the messages of fields that do not parse. */
    specs() {
      const errors = [];
      const inputShape = this.shape.map((f, i) => {
        const r = parseWhole(f.value, `layer 0 (${this.inputName}): shape`);
        if (r.error) errors.push({ layer: 0, field: "shape", part: i, message: r.error });
        return r.value;
      });
      const specs = [{ type: "input", name: this.inputName, shape: this.flatInput ? [inputShape[2]] : inputShape }];
      this.layers.forEach((row, j) => {
        const index = j + 1;
        const name = `layer ${index} (${row.name || `${row.type}${index}`})`;
        const spec = { type: row.type, name: row.name, ...(row.kept || {}) };
        if (row.type === "conv" || row.type === "dense") spec.bias = row.bias;
        for (const column of Object.values(COLUMNS)) {
          const field = column[row.type];
          if (!field) continue;
          const text = row.values[field] !== undefined ? row.values[field] : "";
          let r;
          if (field === "padding") r = parsePadding(text, `${name}: padding`);
          else if (field === "stride" && row.type === "maxpool" && String(text).trim() === "") r = { value: null };
          else r = parseWhole(text, `${name}: ${field}`);
          if (r.error) errors.push({ layer: index, field, message: r.error });
          else spec[field] = r.value;
        }
        specs.push(spec);
      });
      return { specs, errors };
    }

    render() {
      const active = document.activeElement;
      const focused = active && this.edit.contains(active)
        ? [active.closest("tr") && active.closest("tr").dataset.layerIndex, active.dataset.field, active.dataset.action]
        : null;
      this.edit.replaceChildren();
      this.tbody.replaceChildren();
      this.rowNodes = [];
      const cell = (label, ...children) => h("td", { "data-label": label }, ...children);
      const addResultRow = (index, label) => {
        const tr = h("tr", { "data-layer-index": String(index) }, h("th", { scope: "row", text: label }),
          h("td", { "data-col": "output", "data-label": "output" }),
          h("td", { "data-col": "params", "data-label": "parameters", class: "num" }),
          h("td", { "data-col": "activations", "data-label": "activations", class: "num" }),
          h("td", { "data-col": "macs", "data-label": "MACs", class: "num" }),
          h("td", { "data-col": "rf", "data-label": "receptive field", class: "num" }),
          h("td", { "data-col": "jump", "data-label": "jump", class: "num" }));
        this.tbody.append(tr);
        this.rowNodes.push(tr);
      };
      const inputLabel = `0 ${this.inputName}`;
      this.edit.append(h("tr", { "data-layer-index": "0" },
        h("th", { scope: "row", text: inputLabel }), cell("Type", "input"),
        h("td", { colspan: "5", class: "cnnbook-calc__muted", text: "shape: the fields above" }),
        cell("Output", h("span", { "data-col": "output" })), h("td")), this.messageRow(0));
      addResultRow(0, inputLabel);
      this.layers.forEach((row, j) => {
        const index = j + 1;
        const label = row.name || `${row.type}${index}`;
        const where = `layer ${index} (${label})`;
        const typeSelect = h("select", { "data-field": "type", "aria-label": `${where} type`,
          "aria-describedby": this.rowMessageId(index), onchange: (e) => this.changeType(j, e.target.value) },
        TYPES.map((t) => h("option", { value: t, text: TYPE_LABELS[t] })));
        typeSelect.value = row.type;
        const cells = Object.entries(COLUMNS).map(([column, fields]) => {
          const field = fields[row.type];
          const heading = COLUMN_LABELS[column];
          if (!field) return h("td", { class: "cnnbook-calc__muted cnnbook-calc__unused", "data-label": heading }, "\u2013");
          const input = h("input", {
            type: "text", inputmode: field === "padding" ? "text" : "numeric", autocomplete: "off", spellcheck: "false",
            "data-field": field, value: row.values[field] !== undefined ? row.values[field] : "",
            "aria-label": `${where} ${field}`, "aria-describedby": this.rowMessageId(index),
            placeholder: field === "stride" && row.type === "maxpool" ? "= pool" : null,
            title: field === "padding" ? "valid, same, or the zeros added on each side" : null,
          });
          input.addEventListener("input", () => { row.values[field] = input.value; this.update(); });
          return h("td", { class: `cnnbook-calc__col-${column}`, "data-label": field }, input);
        });
        this.edit.append(h("tr", { "data-layer-index": String(index) },
          h("th", { scope: "row", text: `${index} ${label}` }), cell("Type", typeSelect), ...cells,
          cell("Output", h("span", { "data-col": "output" })),
          h("td", { class: "cnnbook-calc__actions" },
            h("button", { type: "button", "data-action": "insert", "aria-label": `Insert a layer after ${where}`,
              title: "Insert a layer below", onclick: () => this.insert(j + 1), text: "+" }),
            h("button", { type: "button", "data-action": "remove", "aria-label": `Remove ${where}`,
              title: "Remove this layer", onclick: () => this.remove(j), text: "\u00d7" }))),
        this.messageRow(index));
        addResultRow(index, `${index} ${label}`);
      });
      this.edit.append(h("tr", { class: "cnnbook-calc__addrow" }, h("td", { colspan: "9" },
        h("button", { type: "button", class: "cnnbook-calc__add", "data-action": "append", onclick: () => this.insert(this.layers.length),
          text: "Add a layer at the end" }))));
      if (focused) {
        const [index, field, action] = focused;
        const tr = this.edit.querySelector(`tr[data-layer-index="${index}"]`) || this.edit.querySelector("tr[data-layer-index]:last-of-type");
        const target = tr && (tr.querySelector(field ? `[data-field="${field}"]` : `[data-action="${action}"]`) || tr.querySelector("select, input, button"));
        if (target) target.focus();
      }
      this.update();
    }

    rowMessageId(index) {
      if (!this.msgBase) this.msgBase = nextId("rowmsg");
      return `${this.msgBase}-${index}`;
    }

    messageRow(index) {
      return h("tr", { class: "cnnbook-calc__msgrow", hidden: true },
        h("td", { colspan: "9" }, h("span", { id: this.rowMessageId(index), class: "cnnbook-calc__msg", "data-message-for": `layer-${index}` })));
    }

    changeType(j, type) {
      const row = this.layers[j];
      row.type = type;
      row.values = { ...NEW_LAYER[type] };
      row.kept = {};
      row.name = "";  // named by its new type and position
      this.render();
    }

    insert(j) {
      this.layers.splice(j, 0, { type: "conv", name: "", bias: true, values: { ...NEW_LAYER.conv } });
      this.render();
      const tr = this.edit.querySelector(`tr[data-layer-index="${j + 1}"]`);
      if (tr) tr.querySelector("select").focus();
    }

    remove(j) {
      this.layers.splice(j, 1);
      this.render();
    }

    clearMessages() {
      for (const f of [...this.shape, this.batch, this.ram]) f.show(null);
      this.edit.querySelectorAll(".cnnbook-calc__msgrow").forEach((tr) => { tr.hidden = true; tr.querySelector(".cnnbook-calc__msg").textContent = ""; });
      this.edit.querySelectorAll("[aria-invalid]").forEach((n) => { n.removeAttribute("aria-invalid"); n.classList.remove("cnnbook-calc__bad"); });
    }

    /* Puts a message next to the field it is about (a layer's row, or a settings field). */
    mark(error) {
      if (error.layer === 0 && error.field === "shape") {
        const f = this.shape[error.part !== null && error.part !== undefined ? (this.flatInput ? 2 : error.part) : 0];
        f.show(error.message);
        return;
      }
      if (error.layer !== null && error.layer !== undefined) {
        const tr = this.edit.querySelector(`tr[data-layer-index="${error.layer}"]`);
        const msgRow = tr && tr.nextElementSibling;
        if (msgRow) {
          msgRow.hidden = false;
          const span = msgRow.querySelector(".cnnbook-calc__msg");
          span.textContent = span.textContent ? `${span.textContent} ${error.message}` : error.message;
          const input = tr.querySelector(`[data-field="${error.field}"]`) || tr.querySelector('[data-field="type"]');
          if (input) { input.setAttribute("aria-invalid", "true"); input.classList.add("cnnbook-calc__bad"); }
          return;
        }
      }
      const field = { batch_size: this.batch, dtype: this.dtype, optimizer: this.optimizer, ram_bytes: this.ram }[error.field] || this.batch;
      field.show(error.message);
    }

    update() {
      this.clearMessages();
      const { specs, errors } = this.specs();
      const dtype = this.dtype.value;
      let rows, error = null;
      if (errors.length) {
        errors.forEach((e) => this.mark(e));
        const firstBad = Math.min(...errors.map((e) => e.layer));
        rows = CnnbookCalc.layerRowsPartial(specs.slice(0, firstBad), dtype).rows;
        rows = firstBad === 0 ? [] : rows;
      } else {
        ({ rows, error } = CnnbookCalc.layerRowsPartial(specs, dtype));
        if (error) this.mark(error);
      }
      this.rowNodes.forEach((tr, i) => {
        const r = rows[i];
        for (const col of ["output", "params", "activations", "macs", "rf", "jump"]) {
          const td = tr.querySelector(`td[data-col="${col}"]`);
          if (!r) setValue(td, null, DASH);
          else if (col === "output") setValue(td, r.output, r.output);
          else setValue(td, r[col], CnnbookCalc.group(r[col]));
        }
      });
      this.edit.querySelectorAll("tr[data-layer-index]").forEach((tr, i) => {
        const r = rows[i];
        setValue(tr.querySelector('[data-col="output"]'), r ? r.output : null, r ? r.output : DASH);
      });
      const ok = !errors.length && !error;
      const totals = ok ? CnnbookCalc.totalsOf(rows) : null;
      for (const [key, node] of Object.entries(this.totals)) setValue(node, ok ? totals[key] : null, ok ? CnnbookCalc.group(totals[key]) : DASH);
      const totalOutput = this.root.querySelector(".cnnbook-calc__total-output");
      totalOutput.textContent = ok ? totals.output : DASH;
      for (const [key, node] of Object.entries(this.summary)) {
        if (!ok) { setValue(node, null, DASH); continue; }
        const v = totals[key];
        const text = key.endsWith("bytes") ? `${bytesText(v)} (${CnnbookCalc.group(v)} bytes)` : CnnbookCalc.group(v);
        setValue(node, v, text);
      }
      // Training memory: needs a valid model, batch size and memory.
      let memory = null;
      let largest = null;
      const batch = parseWhole(this.batch.value, "batch_size");
      const ram = parseNumber(this.ram.value, "memory (GiB)");
      const maxGib = this.d.limits.max_ram_gib;  // Python's calc.MAX_RAM_GIB
      const ramOk = !ram.error && ram.value > 0 && ram.value <= maxGib;
      if (batch.error) this.batch.show(batch.error);
      if (ram.error) this.ram.show(ram.error);
      else if (!ramOk) {
        this.ram.show(`memory (GiB) must be above 0 and at most ${CnnbookCalc.limitText(maxGib)}, got ${this.ram.value.trim()}.`);
      }
      if (ok && !batch.error) {
        try {
          memory = CnnbookCalc.trainingMemory(specs, { batchSize: batch.value, optimizer: this.optimizer.value, dtype });
        } catch (e) {
          if (!(e instanceof CnnbookCalc.CalcError)) throw e;
          this.mark(e);
        }
      }
      if (ok && ramOk) {
        const ramBytes = BigInt(Math.round(ram.value * 2 ** 30));
        this.largest.dataset.ramBytes = String(ramBytes);
        try {  // calc-core's own check, as Python's largest_batch (e.g. under one byte: 0)
          largest = CnnbookCalc.largestBatch(specs, ramBytes, { optimizer: this.optimizer.value, dtype });
        } catch (e) {
          if (!(e instanceof CnnbookCalc.CalcError)) throw e;
          this.mark(e);
        }
      }
      let total = 0n;
      for (const part of MEMORY_PARTS) {
        const v = memory ? memory[part] : null;
        if (v !== null) total += v;
        setValue(this.memory[part], v, v === null ? DASH : bytesText(v));
        this.memory[part].title = v === null ? "" : `${CnnbookCalc.group(v)} bytes`;
      }
      setValue(this.memory.total, memory ? total : null, memory ? `${bytesText(total)} (${CnnbookCalc.group(total)} bytes)` : DASH);
      setValue(this.largest, largest, largest === null ? DASH : `${CnnbookCalc.group(largest)} images`);
      const count = errors.length + (error ? 1 : 0);
      this.status.textContent = ok
        ? `Total: ${CnnbookCalc.group(totals.params)} parameters${totals.non_trainable ? ` (${CnnbookCalc.group(totals.params - totals.non_trainable)} trainable, ${CnnbookCalc.group(totals.non_trainable)} non-trainable: batch normalization's moving means and variances)` : ""}, ${CnnbookCalc.group(totals.activations)} activations per image, output ${totals.output}.`
        : `Fix the marked field${count > 1 ? "s" : ""} to see the totals.`;
      this.root.dataset.state = ok ? "ok" : "error";
    }
  }

  // ------------------------------------------------------------------------------ time widget
  class TimeWidget {
    constructor(root, d) {
      this.root = root;
      this.d = d;
      const preset = root.dataset.preset || "alexnet";
      const machine = root.dataset.machine || "i3-540";
      if (!d.presets[preset]) throw new Error(`unknown data-preset "${preset}"; use one of ${Object.keys(d.presets).join(", ")}`);
      if (!d.machines[machine]) throw new Error(`unknown data-machine "${machine}"; use one of ${Object.keys(d.machines).join(", ")}`);
      const update = () => this.update();
      const defaults = d.defaults;
      this.model = new Field("model", "Model", { value: preset, options: presetOptions(d), onchange: update });
      this.machine = new Field("machine", "Processor", {
        value: machine, onchange: () => this.loadMachine(this.machine.value),
        options: Object.entries(d.machines).map(([k, m]) => [k, m.name]),
      });
      this.fields = {
        clock_ghz: new Field("clock_ghz", "Clock (GHz)", { inputmode: "decimal", onchange: update }),
        cores: new Field("cores", "Cores", { onchange: update }),
        flops_per_cycle: new Field("flops_per_cycle", "FLOPs per cycle per core", { onchange: update }),
        bandwidth_gbs: new Field("bandwidth_gbs", "Memory bandwidth (GB/s)", { inputmode: "decimal", hint: "0: not modelled", onchange: update }),
        efficiency: new Field("efficiency", "Efficiency (share of peak)", { value: String(defaults.efficiency), inputmode: "decimal", onchange: update }),
        images: new Field("images", "Training images", { value: String(defaults.images), onchange: update }),
        epochs: new Field("epochs", "Epochs", { value: String(defaults.epochs), onchange: update }),
        batch_size: new Field("batch_size", "Batch size", { value: String(defaults.batch_size), onchange: update }),
      };
      this.optimizer = new Field("optimizer", "Optimizer", { value: defaults.optimizer, onchange: update,
        options: Object.keys(d.optimizer_slots).map((k) => [k, k]) });
      this.dtype = new Field("dtype", "Number type (dtype)", { value: defaults.dtype, onchange: update,
        options: Object.keys(d.dtype_bytes).map((k) => [k, k]) });
      this.source = h("p", { class: "cnnbook-calc__hint cnnbook-calc__source" });
      this.out = {};
      const line = (key, label) => {
        this.out[key] = h("output", { class: "cnnbook-calc__value", "data-result": key }, DASH);
        return h("tr", {}, h("th", { scope: "row", text: label }), h("td", { class: "num" }, this.out[key]));
      };
      const a = d.assignment;
      const titleId = nextId("title");
      this.status = h("p", { class: "cnnbook-calc__status", role: "status", "aria-live": "polite" });
      this.big = h("output", { class: "cnnbook-calc__big", "data-result": "headline" }, DASH);
      root.append(h("section", { class: "cnnbook-calc__box", "aria-labelledby": titleId },
        h("p", { class: "cnnbook-calc__title", id: titleId, text: "Training-time calculator" }),
        h("div", { class: "cnnbook-calc__grid cnnbook-calc__grid--wide" }, this.model.node, this.machine.node),
        this.source,
        h("div", { class: "cnnbook-calc__grid" }, Object.values(this.fields).map((f) => f.node), this.optimizer.node, this.dtype.node),
        this.status,
        h("div", { class: "cnnbook-calc__results" },
          h("div", { class: "cnnbook-calc__estimate" },
            h("p", { class: "cnnbook-calc__label", text: "This calculator's estimate" }), this.big,
            h("table", { class: "cnnbook-calc__summary" },
              h("caption", { class: "cnnbook-calc__visually-hidden", text: "How the estimate is made" }),
              h("tbody", {},
                line("seconds", "Estimated time"),
                line("bound", "Limited by"),
                line("compute_seconds", "Compute time (FLOPs / sustained FLOP/s)"),
                line("memory_seconds", "Memory-traffic time (bytes / bandwidth)"),
                line("training_flops", "Training FLOPs (3 x forward x images x epochs)"),
                line("peak_flops", "Peak FLOP/s (cores x clock x FLOPs per cycle)"),
                line("sustained_flops", "Sustained FLOP/s (peak x efficiency)"),
                line("traffic_bytes", "Memory traffic")))),
          h("aside", { class: "cnnbook-calc__assignment", "aria-label": "The assignment's own estimate" },
            h("p", { class: "cnnbook-calc__label", text: "The assignment's estimate (Method 1)" }),
            h("p", { class: "cnnbook-calc__big", "data-assignment": "seconds" }, `about ${a.seconds} s`),
            h("p", { "data-assignment": "all-cores" }, `${a.seconds_all_cores[0]}\u2013${a.seconds_all_cores[1]} s on all cores`),
            h("p", { class: "cnnbook-calc__hint" },
              `From ${CnnbookCalc.group(BigInt(a.instructions))} "instructions" (${CnnbookCalc.group(BigInt(a.passes))} passes of ` +
              `${CnnbookCalc.group(BigInt(a.total_memory_values))} values) per image at ${a.clock_ghz} GHz, ` +
              `${CnnbookCalc.group(BigInt(a.images))} images, ${a.epochs} epochs: one value counted as one instruction.`)))));
      this.loadMachine(machine);
    }

    loadMachine(key) {
      const m = this.d.machines[key];
      this.machine.value = key;
      for (const f of ["clock_ghz", "cores", "flops_per_cycle", "bandwidth_gbs"]) this.fields[f].value = String(m[f]);
      this.source.textContent = `Source: ${m.source}.`;
      this.update();
    }

    update() {
      for (const f of [...Object.values(this.fields), this.optimizer, this.dtype, this.model]) f.show(null);
      const parsed = {};
      let bad = 0;
      for (const [key, f] of Object.entries(this.fields)) {
        const decimal = ["clock_ghz", "bandwidth_gbs", "efficiency"].includes(key);
        const r = decimal ? parseNumber(f.value, key) : parseWhole(f.value, key);
        if (r.error) { f.show(r.error); bad += 1; } else parsed[key] = r.value;
      }
      let est = null;
      if (!bad) {
        const m = this.d.machines[this.machine.value];
        const machine = { name: m.name, cores: parsed.cores, clock_ghz: parsed.clock_ghz,
          flops_per_cycle: parsed.flops_per_cycle, bandwidth_gbs: parsed.bandwidth_gbs };
        try {
          est = CnnbookCalc.estimateTraining(this.d.presets[this.model.value].layers, machine, {
            images: parsed.images, epochs: parsed.epochs, efficiency: parsed.efficiency,
            batchSize: parsed.batch_size, optimizer: this.optimizer.value, dtype: this.dtype.value,
          });
        } catch (e) {
          if (!(e instanceof CnnbookCalc.CalcError)) throw e;
          (this.fields[e.field] || { optimizer: this.optimizer, dtype: this.dtype }[e.field] || this.model).show(e.message);
          bad += 1;
        }
      }
      const shown = {
        seconds: (v) => `${secondsText(v)} (${secondsExact(v)})`,
        compute_seconds: secondsExact, memory_seconds: (v) => (v ? secondsExact(v) : "not modelled (no bandwidth)"),
        training_flops: flopsText, peak_flops: (v) => `${flopsText(v)}/s`, sustained_flops: (v) => `${flopsText(v)}/s`,
        traffic_bytes: bytesText, bound: (v) => (v === "compute" ? "arithmetic" : "memory traffic"),
      };
      for (const [key, node] of Object.entries(this.out)) setValue(node, est ? est[key] : null, est ? shown[key](est[key]) : DASH);
      setValue(this.big, est ? est.seconds : null, est ? secondsText(est.seconds) : DASH);
      this.status.textContent = est
        ? `Estimated training time: ${secondsText(est.seconds)}.`
        : `Fix the marked field${bad > 1 ? "s" : ""} to see the estimate.`;
      this.root.dataset.state = est ? "ok" : "error";
    }
  }

  // ------------------------------------------------------------------------------ start
  function init() {
    document.querySelectorAll("div.cnnbook-calc").forEach((root) => {
      if (root.dataset.ready) return;
      root.dataset.ready = "1";
      // The build's tables of the preset (for readers without JavaScript) give way to the form.
      const fallback = root.querySelector(".cnnbook-calc__fallback");
      if (fallback) fallback.remove();
      try {
        const d = window.CNNBOOK_CALC;
        if (!d || !window.CnnbookCalc) throw new Error("its data (_static/calc/presets.js) did not load");
        const kind = root.dataset.widget;
        if (kind === "model") root.widget = new ModelWidget(root, d);
        else if (kind === "time") root.widget = new TimeWidget(root, d);
        else throw new Error(`unknown data-widget "${kind}"; use "model" or "time"`);
      } catch (e) {
        root.replaceChildren(h("p", { class: "cnnbook-calc__msg", role: "alert", text: `This calculator could not start: ${e.message}.` }));
        if (fallback) root.append(fallback);  // the build's numbers, at least
        root.dataset.state = "broken";
      }
    });
  }

  window.CnnbookCalcWidgets = { init };  // draws any widget divs added later
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

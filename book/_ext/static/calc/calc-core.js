/*
 * The calculators' arithmetic in the browser: a line-for-line port of cnnbook/calc.py.
 *
 * No DOM here (calc-widget.js draws the widgets). Whole-number quantities are BigInts, so no
 * size overflows or loses a digit; times are doubles computed in the same order as Python, so
 * they are the same doubles. The tables (dtype sizes, optimizer slots, layer fields and their
 * defaults) come from window.CNNBOOK_CALC, which the build exports from the Python package
 * (book/_ext/cnnbook_calc.py). Errors are CalcError: the Python ValueError's message, plus the
 * layer index and field it is about, so a widget can show it next to that field.
 *
 * Each row also has the layer's receptive field and jump (rf, jump: calc.py's module docstring).
 *
 * The limits come from there too (CNNBOOK_CALC.limits, Python's constants): a whole number above
 * max_field (2^31 - 1) is "absurdly large"; a machine's clock and bandwidth, the efficiency, a
 * FLOP/s rate and the memory for largestBatch have Python's ranges. Together they keep every
 * double below 1e300, so no result is ever Infinity or NaN. Python and the browser refuse the same
 * inputs with the same messages (tests/test_browser.py checks a list of them).
 */
(function (root) {
  "use strict";

  class CalcError extends Error {
    constructor(message, where) {
      super(message);
      this.name = "CalcError";
      this.layer = where && where.layer !== undefined ? where.layer : null;
      this.field = (where && where.field) || null;
      this.part = where && where.part !== undefined ? where.part : null;
    }
  }

  function data() {
    const d = root.CNNBOOK_CALC;
    if (!d) throw new Error("Calculator data missing: _static/calc/presets.js was not loaded.");
    return d;
  }

  /* One of Python's limits (calc.MAX_FIELD, MIN_RATE, ...), as the build exported it. */
  function limit(name) {
    const limits = data().limits;
    if (!limits || typeof limits[name] !== "number") {
      throw new Error(`Calculator limit ${name} missing: _static/calc/presets.js is out of date; rebuild the book.`);
    }
    return limits[name];
  }

  const maxField = () => BigInt(limit("max_field"));

  /* Python's repr() of the values a spec can hold, for messages that quote them. A whole number
   * is an int (JSON's 32 and 32.0 are one number here, and a spec's numbers are ints). */
  function pyRepr(value) {
    if (value === null || value === undefined) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (typeof value === "bigint") return value.toString();
    if (typeof value === "number") return Number.isInteger(value) ? BigInt(value).toString() : pyFloat(value);
    if (typeof value === "string") return pyStr(value);
    if (Array.isArray(value)) return `[${value.map(pyRepr).join(", ")}]`;
    if (typeof value === "object") {
      return `{${Object.entries(value).map(([k, v]) => `${pyRepr(k)}: ${pyRepr(v)}`).join(", ")}}`;
    }
    return String(value);
  }

  /* Characters Python's repr() escapes (str.isprintable is false): controls, format characters,
   * surrogates, private use, unassigned, and separators other than the space. */
  const NOT_PRINTABLE = /^[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]$/u;

  /* Python's repr() of a str: its quotes, backslash escapes, \xNN, \uNNNN and \UNNNNNNNN. */
  function pyStr(s) {
    const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
    const named = { "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", [quote]: `\\${quote}` };
    let out = "";
    for (const ch of s) {
      const code = ch.codePointAt(0);
      if (named[ch]) out += named[ch];
      else if (ch !== " " && NOT_PRINTABLE.test(ch)) {
        const [prefix, width] = code < 0x100 ? ["x", 2] : code < 0x10000 ? ["u", 4] : ["U", 8];
        out += `\\${prefix}${code.toString(16).padStart(width, "0")}`;
      } else out += ch;
    }
    return quote + out + quote;
  }

  /* Python's repr() of a float: the same shortest digits as JavaScript, in Python's layout
   * (exponent below 1e-4 and from 1e16, at least two exponent digits, 3.0 rather than 3). */
  function pyFloat(x) {
    if (Number.isNaN(x)) return "nan";
    if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
    if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
    const [mantissa, e] = Math.abs(x).toExponential().split("e");
    const digits = mantissa.replace(".", "");
    const exp = Number(e);
    let text;
    if (exp < -4 || exp >= 16) {
      const sign = exp < 0 ? "-" : "+";
      text = `${digits[0]}${digits.length > 1 ? `.${digits.slice(1)}` : ""}e${sign}${String(Math.abs(exp)).padStart(2, "0")}`;
    } else if (exp < 0) {
      text = `0.${"0".repeat(-exp - 1)}${digits}`;
    } else {
      text = `${digits.slice(0, exp + 1).padEnd(exp + 1, "0")}.${digits.slice(exp + 1) || "0"}`;
    }
    return x < 0 ? `-${text}` : text;
  }

  /* A limit as Python's messages print it (calc._limit_text): 1,000,000, or a float's repr. */
  function limitText(x) {
    return Number.isInteger(x) && Math.abs(x) <= 2 ** 53 ? group(x) : pyFloat(x);
  }

  function isWhole(value) {
    return typeof value === "bigint" || (typeof value === "number" && Number.isInteger(value));
  }

  /* _whole: value as a BigInt from `minimum` to `maximum` (max_field), or a CalcError naming `what`. */
  function whole(value, what, where, minimum = 1n, maximum = maxField()) {
    if (!isWhole(value)) throw new CalcError(`${what} must be a whole number, got ${pyRepr(value)}.`, where);
    const v = BigInt(value);
    if (v < minimum) {
      const bound = minimum === 1n ? "positive" : `at least ${minimum}`;
      throw new CalcError(`${what} must be ${bound}, got ${v}.`, where);
    }
    if (v > maximum) {
      throw new CalcError(`${what} is absurdly large: at most ${group(maximum)}, got ${group(v)}.`, where);
    }
    return v;
  }

  /* Python's a // b (BigInt division truncates toward zero instead). */
  function floorDiv(a, b) {
    const q = a / b;
    return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? q - 1n : q;
  }

  function ceilDiv(a, b) {
    return -floorDiv(-a, b);  // -(-a // b)
  }

  function windowLength(size, kernel, stride, padding, name, where) {
    if (padding === "same") return ceilDiv(size, stride);
    const padded = size + 2n * padding;
    if (kernel > padded) {
      throw new CalcError(
        `${name}: kernel ${kernel} is larger than its padded input ${padded} ` +
        `(${size} + 2 x ${padding} padding); use a smaller kernel, more padding or padding 'same'.`, where);
    }
    return floorDiv(padded - kernel, stride) + 1n;
  }

  /* Python's sorted() of strings: by code point (JavaScript's sort() goes by UTF-16 unit). */
  function pySorted(names) {
    const points = (t) => Array.from(t, (ch) => ch.codePointAt(0));
    return names.slice().sort((a, b) => {
      const x = points(a), y = points(b);
      for (let i = 0; i < Math.min(x.length, y.length); i += 1) if (x[i] !== y[i]) return x[i] - y[i];
      return x.length - y.length;
    });
  }

  function checkFields(spec, name, index) {
    const where = { layer: index, field: "type" };
    if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
      throw new CalcError(`${name}: a layer must be a dict with a 'type', got ${pyRepr(spec)}.`, where);
    }
    const fields = data().fields;
    const kind = spec.type;
    if (typeof kind !== "string" || !Object.prototype.hasOwnProperty.call(fields, kind)) {
      throw new CalcError(`${name}: unknown layer type ${pyRepr(kind)}; use one of ` +
        `${data().layer_types.join(", ")}.`, where);
    }
    const { required, optional } = fields[kind];
    const missing = pySorted(required.filter((f) => !(f in spec)));
    if (missing.length) {
      throw new CalcError(`${name}: a ${kind} layer needs ${missing.join(", ")}.`, { layer: index, field: missing[0] });
    }
    const known = new Set([...required, ...Object.keys(optional), "type", "name"]);
    const unknown = pySorted(Object.keys(spec).filter((f) => !known.has(f)));
    if (unknown.length) {
      throw new CalcError(`${name}: unknown field(s) ${unknown.join(", ")} for a ${kind} layer.`, { layer: index, field: unknown[0] });
    }
    if (spec.name !== null && spec.name !== undefined && typeof spec.name !== "string") {
      throw new CalcError(`${name}: name must be a string, got ${pyRepr(spec.name)}.`, { layer: index, field: "name" });
    }
    for (const flag of ["bias", "keepdims"]) {
      if (flag in spec && typeof spec[flag] !== "boolean") {
        throw new CalcError(`${name}: ${flag} must be True or False, got ${pyRepr(spec[flag])}.`, { layer: index, field: flag });
      }
    }
    return { ...optional, ...spec };
  }

  function parsePadding(value, name, where) {
    if (value === "valid") return 0n;
    if (value === "same") return "same";
    if (typeof value === "string") {
      throw new CalcError(`${name}: unknown padding ${pyRepr(value)}; use 'valid', 'same' or a whole number.`, where);
    }
    return whole(value, `${name}: padding`, where, 0n);
  }

  function fmt(shape) {
    return shape.map(String).join("x");
  }

  function product(shape) {
    return shape.reduce((a, b) => a * b, 1n);
  }

  function dtypeSize(dtype) {
    const sizes = data().dtype_bytes;
    if (typeof dtype !== "string" || !Object.prototype.hasOwnProperty.call(sizes, dtype)) {
      throw new CalcError(`Unknown dtype ${pyRepr(dtype)}; use one of ${Object.keys(sizes).join(", ")}.`, { field: "dtype" });
    }
    return BigInt(sizes[dtype]);
  }

  /* layer_rows, but it keeps the rows before a bad layer: {rows, error}. */
  function layerRowsPartial(layers, dtype = "float32") {
    const rows = [];
    try {
      const size = dtypeSize(dtype);
      if (!Array.isArray(layers) || layers.length === 0) {
        throw new CalcError("A model is a non-empty list of layer specs, starting with an input layer.", { layer: 0, field: "type" });
      }
      let shape = null;
      let rf = 1n, jump = 1n, wholeInput = 1n;  // the input's pixels: each sees itself, one pixel apart
      layers.forEach((raw, index) => {
        const spec = checkFields(raw, `layer ${index}`, index);
        const kind = spec.type;
        const lname = spec.name || `${kind}${index}`;
        const name = `layer ${index} (${lname})`;
        const at = (field, part) => ({ layer: index, field, part });
        let weights = 0n, biases = 0n, frozen = 0n, macs = 0n;
        if ((kind === "input") !== (index === 0)) {
          throw new CalcError(`${name}: the first layer, and only the first, must be an input layer.`, at("type"));
        }
        if (kind === "input") {
          const dims = spec.shape;
          if (!Array.isArray(dims) || (dims.length !== 1 && dims.length !== 3)) {
            throw new CalcError(`${name}: shape must be [height, width, channels] or [features], got ${pyRepr(dims)}.`, at("shape"));
          }
          shape = dims.map((d, i) => whole(d, `${name}: shape`, at("shape", i)));
          wholeInput = shape.length === 3 && shape[1] > shape[0] ? shape[1] : shape[0];  // the longer side
        } else if (kind === "flatten") {
          shape = [product(shape)];
        } else if (kind === "dense") {
          if (shape.length !== 1) {
            throw new CalcError(`${name}: a dense layer needs a flat input but gets ${fmt(shape)}; ` +
              "add a flatten layer before it.", at("type"));
          }
          const units = whole(spec.units, `${name}: units`, at("units"));
          weights = shape[0] * units;
          biases = spec.bias ? units : 0n;
          macs = shape[0] * units;
          shape = [units];
          rf = jump = wholeInput;
        } else if (kind === "batchnorm") {  // per channel: gamma, beta (trained), moving mean, variance
          weights = biases = shape[shape.length - 1];
          frozen = 2n * shape[shape.length - 1];
        } else if (kind === "dropout") {
          const rate = spec.rate;
          if (!(typeof rate === "number" || typeof rate === "bigint") || !(rate >= 0 && rate < 1)) {
            throw new CalcError(`${name}: rate must be a number from 0 to 1 (1 excluded), got ${pyRepr(rate)}.`, at("rate"));
          }
        } else {
          if (shape.length !== 3) {
            throw new CalcError(`${name}: a ${kind} layer needs a height x width x channels input, got ${fmt(shape)}.`, at("type"));
          }
          const [h, w, c] = shape;
          if (kind === "lrn") {
            whole(spec.size, `${name}: size`, at("size"));
          } else if (kind === "gap") {
            shape = spec.keepdims ? [1n, 1n, c] : [c];
            rf = jump = wholeInput;
          } else {
            const key = kind === "conv" ? "kernel" : "pool";
            const k = whole(spec[key], `${name}: ${key}`, at(key));
            const s = whole(spec.stride !== null && spec.stride !== undefined ? spec.stride : k, `${name}: stride`, at("stride"));
            const p = parsePadding(spec.padding, name, at("padding"));
            const oh = windowLength(h, k, s, p, name, at(key));
            const ow = windowLength(w, k, s, p, name, at(key));
            rf += (k - 1n) * jump;
            jump *= s;
            if (kind === "maxpool") {
              shape = [oh, ow, c];
            } else {
              const f = whole(spec.filters, `${name}: filters`, at("filters"));
              const g = whole(spec.groups, `${name}: groups`, at("groups"));
              if (c % g !== 0n || f % g !== 0n) {
                throw new CalcError(`${name}: groups ${g} must divide both the input channels (${c}) and the filters (${f}).`, at("groups"));
              }
              weights = k * k * (c / g) * f;
              biases = spec.bias ? f : 0n;
              macs = oh * ow * f * k * k * (c / g);
              shape = [oh, ow, f];
            }
          }
        }
        const values = kind === "flatten" ? 0n : product(shape);
        const params = weights + biases + frozen;
        rows.push({
          layer: lname, type: kind, output: fmt(shape), shape: shape.slice(),
          weights, biases, non_trainable: frozen, params, activations: values, macs, flops: 2n * macs,
          activation_bytes: values * size, param_bytes: params * size, rf, jump,
        });
      });
      return { rows, error: null };
    } catch (err) {
      if (err instanceof CalcError) return { rows, error: err };
      throw err;
    }
  }

  function layerRows(layers, dtype = "float32") {
    const { rows, error } = layerRowsPartial(layers, dtype);
    if (error) throw error;
    return rows;
  }

  const SUMS = ["weights", "biases", "non_trainable", "params", "activations", "macs", "flops", "activation_bytes", "param_bytes"];

  function totalsOf(rows) {
    const totals = {};
    for (const c of SUMS) totals[c] = rows.reduce((a, r) => a + r[c], 0n);
    totals.output = rows.length ? rows[rows.length - 1].output : "";
    return totals;
  }

  function analyze(layers, dtype = "float32") {
    const table = layerRows(layers, dtype);
    return { table, totals: totalsOf(table), dtype };
  }

  function optimizerSlots(optimizer) {
    const slots = data().optimizer_slots;
    if (typeof optimizer !== "string" || !Object.prototype.hasOwnProperty.call(slots, optimizer)) {
      throw new CalcError(`Unknown optimizer ${pyRepr(optimizer)}; use one of ${Object.keys(slots).join(", ")}.`, { field: "optimizer" });
    }
    return BigInt(slots[optimizer]);
  }

  function trainingMemory(layers, { batchSize, optimizer = "adam", dtype = "float32" } = {}) {
    const batch = whole(batchSize, "batch_size", { field: "batch_size" });
    const slots = optimizerSlots(optimizer);
    const table = analyze(layers, dtype).table;
    const size = dtypeSize(dtype);
    const params = table.reduce((a, r) => a + r.params, 0n);
    const trainable = params - table.reduce((a, r) => a + r.non_trainable, 0n);  // no gradient, no state
    const stored = table.slice(1).reduce((a, r) => a + r.activations, 0n);
    return {
      "weights": params * size,
      "gradients": trainable * size,
      "optimizer state": trainable * size * slots,
      "activations": stored * size * batch,
      "input batch": table[0].activations * size * batch,
    };
  }

  function largestBatch(layers, ramBytes, { optimizer = "adam", dtype = "float32" } = {}) {
    const ram = whole(ramBytes, "ram_bytes", { field: "ram_bytes" }, 1n, BigInt(limit("max_ram_bytes")));
    const one = trainingMemory(layers, { batchSize: 1n, optimizer, dtype });
    const fixed = one["weights"] + one["gradients"] + one["optimizer state"];
    const perImage = one["activations"] + one["input batch"];
    const n = floorDiv(ram - fixed, perImage);
    return n > 0n ? n : 0n;
  }

  /* Python's _between: a number (a BigInt too, as Python's int) from the limit named `low` to the
   * one named `high`, as a double, or its ValueError's message. */
  function between(value, what, low, high) {
    const lo = limit(low), hi = limit(high);
    const number = typeof value === "number" || typeof value === "bigint";
    if (!number || !(lo <= value && value <= hi)) {
      let shown = pyRepr(value);  // a number shows as the float it would be; a BigInt too large for one, as itself
      if (number) shown = Number.isFinite(Number(value)) || typeof value === "number" ? pyFloat(Number(value)) : value.toString();
      throw new CalcError(`${what} must be a number from ${limitText(lo)} to ${limitText(hi)}, got ${shown}.`, { field: what });
    }
    return Number(value);
  }

  /* Python's MIN_RATE and MAX_RATE: with them no time reaches 1e300 seconds. */
  const rate = (value, what) => between(value, what, "min_rate", "max_rate");

  /* A machine's numbers, checked and kept as Python's Machine keeps them: the time widget's fields. */
  function checkMachine(m) {
    const cores = whole(m.cores, "cores", { field: "cores" });
    const perCycle = whole(m.flops_per_cycle, "flops_per_cycle", { field: "flops_per_cycle" });
    const clock = rate(m.clock_ghz, "clock_ghz");
    const known = !(m.bandwidth_gbs === 0 || m.bandwidth_gbs === 0n);  // 0: not known, no memory bound
    const bandwidth = known ? rate(m.bandwidth_gbs, "bandwidth_gbs") : 0;
    return { ...m, cores: Number(cores), clock_ghz: clock, flops_per_cycle: Number(perCycle), bandwidth_gbs: bandwidth };
  }

  function peakFlops(m) {
    return m.cores * m.clock_ghz * 1e9 * m.flops_per_cycle;  // Machine.peak_flops, same order
  }

  function estimateTraining(layers, machine, { images, epochs, efficiency = 0.5, batchSize = 32,
    optimizer = "adam", dtype = "float32" } = {}) {
    const nImages = whole(images, "images", { field: "images" });
    const nEpochs = whole(epochs, "epochs", { field: "epochs" });
    const share = between(efficiency, "efficiency", "min_efficiency", "max_efficiency");
    const batch = whole(batchSize, "batch_size", { field: "batch_size" });
    const slots = optimizerSlots(optimizer);
    const m = checkMachine(machine);
    const summary = analyze(layers, dtype);
    const size = dtypeSize(dtype);
    const flops = nImages * nEpochs * 3n * summary.totals.flops;
    const peak = peakFlops(m);
    const sustained = peak * share;
    const computeS = Number(flops) / sustained;
    const perImage = 4n * summary.totals.activations * size;
    const frozen = summary.totals.non_trainable;  // only read twice
    const perBatch = (2n * frozen + (summary.totals.params - frozen) * (6n + 2n * slots)) * size;
    const traffic = nImages * nEpochs * perImage + ceilDiv(nImages, batch) * nEpochs * perBatch;
    const memoryS = m.bandwidth_gbs ? Number(traffic) / (m.bandwidth_gbs * 1e9) : 0.0;
    return {
      machine: m.name, training_flops: flops, peak_flops: peak, sustained_flops: sustained,
      compute_seconds: computeS, traffic_bytes: traffic, memory_seconds: memoryS,
      seconds: Math.max(computeS, memoryS), bound: computeS >= memoryS ? "compute" : "memory",
    };
  }

  /* estimate_epoch_seconds: training images plus a forward pass over validation, at a FLOP/s. */
  function estimateEpochSeconds(layers, images, flopsPerSecond, { validationImages = 0n } = {}) {
    const nImages = whole(images, "images", { field: "images" });
    const nValidation = whole(validationImages, "validation_images", { field: "validation_images" }, 0n);
    const perSecond = between(flopsPerSecond, "flops_per_second", "min_flops_per_second", "max_flops_per_second");
    const forward = analyze(layers).totals.flops;
    return Number(nImages * 3n * forward + nValidation * forward) / perSecond;
  }

  /* 1234567 -> "1,234,567" (Python's f"{n:,}"), for BigInts and whole numbers. */
  function group(n) {
    const s = BigInt(n).toString();
    const neg = s.startsWith("-");
    const digits = neg ? s.slice(1) : s;
    return (neg ? "-" : "") + digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  /* A copy with BigInts as decimal strings: what page.evaluate and JSON can carry. */
  function plain(value) {
    if (typeof value === "bigint") return value.toString();
    if (Array.isArray(value)) return value.map(plain);
    if (value && typeof value === "object") {
      const out = {};
      for (const [k, v] of Object.entries(value)) out[k] = plain(v);
      return out;
    }
    return value;
  }

  const api = {
    CalcError, layerRows, layerRowsPartial, totalsOf, analyze, trainingMemory, largestBatch,
    estimateTraining, estimateEpochSeconds, peakFlops, checkMachine, group, plain, pyRepr, pyFloat,
    limitText, whole,
    get MAX_FIELD() { return maxField(); },  // read when used: the limits may load after this file
    get limits() { return { ...data().limits }; },
  };
  root.CnnbookCalc = api;
  if (typeof module === "object" && module.exports) module.exports = api;
})(typeof window !== "undefined" ? window : globalThis);

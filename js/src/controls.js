// The controls: prompt, model, sampling strategy with only its relevant inputs, stop strings,
// alternatives top-k, response format, seed, and the Generate / Stop buttons. Each input writes
// to the model only when its value is valid; invalid values are flagged at the input.

import { decodeEscapes, encodeEscapes } from "./format.js";
import { parseField, parseGrammar, parseJsonSchema, parseStops } from "./validate.js";

const NUMBERS = [
  { name: "temperature", label: "Temperature", step: "0.1", when: (m) => m.get("strategy") === "top_p" },
  { name: "top_p", label: "Top-p", step: "0.05", when: (m) => m.get("strategy") === "top_p" },
  { name: "top_k", label: "Top-k", step: "1", when: (m) => m.get("strategy") === "top_k" },
  { name: "max_tokens", label: "Max tokens", step: "1" },
  { name: "repetition_penalty", label: "Repetition penalty", step: "0.05" },
];
const MORE_NUMBERS = [
  { name: "logprobs_top_k", label: "Alternatives shown (top-k)", step: "1" },
  { name: "seed", label: "Seed (blank: random)", step: "1" },
];
const ALL_NUMBERS = [...NUMBERS, ...MORE_NUMBERS];

let counter = 0;

function el(doc, tag, props = {}, children = []) {
  const node = doc.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node && k !== "list") node[k] = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function field(doc, label, input, name) {
  const id = `nbc-${name}-${++counter}`;
  input.id = id;
  input.name = name;
  const error = el(doc, "div", { className: "nbc-field-error", id: `${id}-error` });
  input.setAttribute("aria-describedby", error.id);
  const wrap = el(doc, "div", { className: "nbc-field", dataset: { field: name } }, [
    el(doc, "label", { htmlFor: id, textContent: label }),
    input,
    error,
  ]);
  return { wrap, input, error };
}

function select(doc, options) {
  const s = doc.createElement("select");
  for (const [value, text] of options) s.append(el(doc, "option", { value, textContent: text }));
  return s;
}

/**
 * Build the controls bound to `model`. `onGenerate()` / `onStop()` are called by the buttons and
 * Ctrl/Cmd+Enter; `onModels()` when the model list is opened. Returns {el, flush, errors, refresh, destroy}.
 */
export function createControls(model, { onGenerate, onStop, onModels, onStep, onScore, debounceMs = 150 } = {}) {
  const doc = globalThis.document;
  const root = el(doc, "div", { className: "nbc-controls" });
  const local = {}; // name -> message, for raw input that could not be written to the model
  const fields = {}; // name -> {wrap, input, error}
  const listeners = [];
  let saveTimer = null;

  const on = (event, fn) => {
    model.on(event, fn);
    listeners.push([event, fn]);
  };
  const save = (now = false) => {
    if (saveTimer !== null) clearTimeout(saveTimer);
    saveTimer = null;
    if (now) model.save_changes();
    else saveTimer = setTimeout(() => save(true), debounceMs);
  };
  const write = (name, value) => {
    delete local[name];
    model.set(name, value);
    save();
    refresh();
  };
  const reject = (name, message) => {
    local[name] = message;
    refresh();
  };

  // -- prompt
  const prompt = field(doc, "Prompt", el(doc, "textarea", { rows: 4, placeholder: "Type a prompt…" }), "content");
  prompt.input.value = model.get("content") ?? "";
  prompt.input.addEventListener("input", () => write("content", prompt.input.value));
  prompt.wrap.classList.add("nbc-prompt");

  // -- model and strategy
  const modelSel = field(doc, "Model", select(doc, []), "model_name");
  modelSel.input.addEventListener("change", () => write("model_name", modelSel.input.value));
  modelSel.input.addEventListener("focus", () => onModels && onModels()); // models loaded since
  // -- a second model: its column runs the same prompt beside this one (the inside views)
  const compare = field(doc, "Compare with", select(doc, [["", "(no second model)"]]), "compare_model");
  compare.input.title = "Run the same prompt on a second model, in a column beside this one (same settings, same colours)";
  compare.input.addEventListener("change", () => write("compare_model", compare.input.value));
  compare.input.addEventListener("focus", () => onModels && onModels());
  const strategy = field(
    doc,
    "Strategy",
    select(doc, [
      ["greedy", "greedy"],
      ["top_p", "top-p (nucleus)"],
      ["top_k", "top-k"],
    ]),
    "strategy",
  );
  strategy.input.addEventListener("change", () => write("strategy", strategy.input.value));
  // -- chat: wrap the prompt in the model's chat template (the echo shows the templated prompt)
  const chat = field(doc, "Chat template", el(doc, "input", { type: "checkbox", title: "Wrap the prompt in the model's chat template as one user turn (for Instruct models)" }), "chat");
  chat.wrap.classList.add("nbc-chat");
  chat.input.addEventListener("change", () => write("chat", chat.input.checked));
  fields.model_name = modelSel;
  fields.strategy = strategy;
  fields.chat = chat;

  for (const spec of ALL_NUMBERS) {
    const input = el(doc, "input", { type: "number", step: spec.step, inputMode: "decimal" });
    const f = field(doc, spec.label, input, spec.name);
    fields[spec.name] = f;
    input.addEventListener("input", () => {
      const parsed = parseField(spec.name, input.value);
      if (parsed.error) reject(spec.name, parsed.error);
      else write(spec.name, parsed.value);
    });
  }

  // -- stop strings
  const stopInputs = [0, 1, 2, 3].map((i) =>
    el(doc, "input", { type: "text", className: "nbc-stop", placeholder: `stop ${i + 1}`, "aria-label": `Stop string ${i + 1}` }),
  );
  const stopError = el(doc, "div", { className: "nbc-field-error", id: `nbc-stop-${++counter}-error` });
  const stopWrap = el(doc, "fieldset", { className: "nbc-field nbc-stops", dataset: { field: "stop_strings" } }, [
    el(doc, "legend", { textContent: "Stop strings (\\n for a newline)" }),
    ...stopInputs,
    stopError,
  ]);
  const onStopInput = () => {
    const parsed = parseStops(stopInputs.map((i) => decodeEscapes(i.value)));
    if (parsed.error) reject("stop_strings", parsed.error);
    else write("stop_strings", parsed.value);
  };
  stopInputs.forEach((i) => i.addEventListener("input", onStopInput));
  fields.stop_strings = { wrap: stopWrap, input: stopInputs[0], inputs: stopInputs, error: stopError };

  // -- response format
  const format = field(
    doc,
    "Response format",
    select(doc, [
      ["none", "free text"],
      ["json_schema", "JSON schema"],
      ["grammar", "grammar"],
    ]),
    "response_format",
  );
  format.input.addEventListener("change", () => write("response_format", format.input.value));
  const schema = field(doc, "JSON schema", el(doc, "textarea", { rows: 4, placeholder: '{"type": "object", ...}' }), "json_schema");
  schema.input.addEventListener("input", () => {
    const parsed = parseJsonSchema(schema.input.value);
    model.set("json_schema", schema.input.value); // keep the text even while it is not valid JSON
    save();
    if (parsed.error) reject("json_schema", parsed.error);
    else write("json_schema", parsed.value);
  });
  const syntax = field(
    doc,
    "Grammar syntax",
    select(doc, [
      ["gbnf", "GBNF"],
      ["lark", "Lark"],
      ["regex", "regex"],
    ]),
    "grammar_syntax",
  );
  syntax.input.addEventListener("change", () => write("grammar_syntax", syntax.input.value));
  const grammar = field(doc, "Grammar", el(doc, "textarea", { rows: 4, placeholder: 'root ::= "yes" | "no"' }), "grammar");
  grammar.input.addEventListener("input", () => {
    const parsed = parseGrammar(grammar.input.value);
    if (parsed.error) {
      model.set("grammar", grammar.input.value);
      save();
      reject("grammar", parsed.error);
    } else write("grammar", parsed.value);
  });
  Object.assign(fields, { content: prompt, response_format: format, json_schema: schema, grammar_syntax: syntax, grammar });

  // -- buttons
  const generate = el(doc, "button", { type: "button", className: "nbc-generate", textContent: "Generate" });
  const stop = el(doc, "button", { type: "button", className: "nbc-stop-button", textContent: "Stop" });
  const step = el(doc, "button", { type: "button", className: "nbc-step", textContent: "Step", title: "Exactly one token with the current settings; the draw is shown" });
  const score = el(doc, "button", { type: "button", className: "nbc-score", textContent: "Score", title: "Score the prompt: each token's surprisal and rank, and the perplexity; generates nothing" });
  const hint = el(doc, "span", { className: "nbc-hint", textContent: "Ctrl/⌘+Enter" });
  step.addEventListener("click", () => {
    refresh();
    if (step.disabled) return;
    save(true);
    if (onStep) onStep();
  });
  score.addEventListener("click", () => {
    save(true);
    if (onScore) onScore();
  });
  generate.addEventListener("click", () => requestGenerate());
  stop.addEventListener("click", () => {
    if (onStop) onStop();
  });

  const main = el(doc, "div", { className: "nbc-row" }, [
    modelSel.wrap,
    compare.wrap,
    chat.wrap,
    strategy.wrap,
    ...NUMBERS.map((s) => fields[s.name].wrap),
  ]);
  const more = el(doc, "details", { className: "nbc-more" }, [
    el(doc, "summary", { textContent: "More options" }),
    el(doc, "div", { className: "nbc-row" }, [...MORE_NUMBERS.map((s) => fields[s.name].wrap), format.wrap, syntax.wrap]),
    stopWrap,
    schema.wrap,
    grammar.wrap,
  ]);
  root.append(prompt.wrap, main, more, el(doc, "div", { className: "nbc-actions" }, [generate, step, stop, score, hint]));

  function relevant(name) {
    const spec = ALL_NUMBERS.find((s) => s.name === name);
    if (spec && spec.when) return spec.when(model);
    if (name === "json_schema") return model.get("response_format") === "json_schema";
    if (name === "grammar" || name === "grammar_syntax") return model.get("response_format") === "grammar";
    return true;
  }

  /** Relevant invalid controls: local parse errors first, then the kernel's `invalid` trait. */
  function errors() {
    const out = {};
    const remote = model.get("invalid") || {};
    for (const name of Object.keys(fields)) {
      if (!relevant(name)) continue;
      const message = local[name] ?? remote[name];
      if (message) out[name] = message;
    }
    return out;
  }

  function syncInputs() {
    const ids = model.get("model_ids") || [];
    const current = model.get("model_name") || "";
    const options = [...new Set([current, ...ids].filter(Boolean))];
    if ([...modelSel.input.options].map((o) => o.value).join("\n") !== options.join("\n")) {
      modelSel.input.replaceChildren(...options.map((id) => el(doc, "option", { value: id, textContent: id })));
    }
    modelSel.input.value = current;
    const second = model.get("compare_model") || "";
    const others = ["", ...new Set([second, ...ids].filter(Boolean))];
    if ([...compare.input.options].map((o) => o.value).join("\n") !== others.join("\n")) {
      compare.input.replaceChildren(...others.map((id) => el(doc, "option", { value: id, textContent: id || "(no second model)" })));
    }
    compare.input.value = second;
    chat.input.checked = Boolean(model.get("chat"));
    strategy.input.value = model.get("strategy");
    format.input.value = model.get("response_format");
    syntax.input.value = model.get("grammar_syntax");
    const text = (input, value) => {
      if (input.value !== value) input.value = value;
    };
    text(prompt.input, model.get("content") ?? "");
    text(schema.input, model.get("json_schema") ?? "");
    text(grammar.input, model.get("grammar") ?? "");
    for (const spec of ALL_NUMBERS) {
      if (local[spec.name]) continue; // keep what the user is fixing
      const input = fields[spec.name].input;
      const value = model.get(spec.name);
      const parsed = parseField(spec.name, input.value);
      if (parsed.error || parsed.value !== value) input.value = value === null || value === undefined ? "" : String(value);
    }
    if (!local.stop_strings) {
      const stops = model.get("stop_strings") || [];
      const shown = stopInputs.map((i) => decodeEscapes(i.value)).filter((s) => s !== "");
      if (shown.join("\u0000") !== stops.join("\u0000")) {
        stopInputs.forEach((input, i) => (input.value = stops[i] !== undefined ? encodeEscapes(stops[i]) : ""));
      }
    }
  }

  function refresh() {
    syncInputs();
    for (const spec of ALL_NUMBERS) fields[spec.name].wrap.hidden = !relevant(spec.name);
    schema.wrap.hidden = !relevant("json_schema");
    grammar.wrap.hidden = !relevant("grammar");
    syntax.wrap.hidden = !relevant("grammar_syntax");
    const bad = errors();
    for (const [name, f] of Object.entries(fields)) {
      const message = bad[name] || "";
      f.error.textContent = message;
      f.wrap.classList.toggle("nbc-invalid", Boolean(message));
      for (const input of f.inputs || [f.input]) {
        if (message) input.setAttribute("aria-invalid", "true");
        else input.removeAttribute("aria-invalid");
      }
    }
    // An invalid hidden option sits in "More options": open it so the flag is seen.
    if (Object.keys(bad).some((n) => more.contains(fields[n].wrap))) more.open = true;
    const status = model.get("status");
    const busy = status === "running" || status === "loading";
    generate.disabled = busy || Object.keys(bad).length > 0;
    generate.title = Object.keys(bad).length ? `Fix: ${Object.keys(bad).join(", ")}` : "";
    stop.disabled = !busy;
    step.disabled = generate.disabled;
    score.disabled = busy;
  }

  function requestGenerate() {
    refresh();
    if (generate.disabled) return false;
    save(true);
    if (onGenerate) onGenerate();
    return true;
  }

  const keydown = (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      e.stopPropagation();
      requestGenerate();
    }
  };
  root.addEventListener("keydown", keydown);

  // A run has ended: say so from the browser, so reactive hosts (marimo re-runs the cells that
  // read the widget only on front-end changes) see the new result.
  const acknowledge = () => {
    const run = model.get("run");
    if (["done", "stopped", "error"].includes(model.get("status")) && model.get("completed_run") !== run) {
      model.set("completed_run", run);
      model.save_changes();
    }
  };
  on("change:status", acknowledge);

  for (const name of ["status", "invalid", "model_ids", "model_name", "compare_model", "chat", "strategy", "response_format", "grammar_syntax", "content", "json_schema", "grammar", "stop_strings", ...ALL_NUMBERS.map((s) => s.name)]) {
    on(`change:${name}`, refresh);
  }
  refresh();

  return {
    el: root,
    buttons: { generate, stop, step, score },
    fields,
    compare,
    errors,
    refresh,
    requestGenerate,
    flush: () => save(true),
    destroy() {
      if (saveTimer !== null) clearTimeout(saveTimer);
      for (const [event, fn] of listeners) model.off(event, fn);
    },
  };
}

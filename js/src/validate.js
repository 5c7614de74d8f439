// Client-side checks of control values, mirroring nb_completion/widget/_controls.py (the kernel
// re-checks and its messages arrive in the `invalid` trait). Each parser turns the raw text of an
// input into {value} or {error}; nothing invalid is written to the model.

const INT = /^[+-]?\d+$/;

function number(raw, { integer = false, optional = false } = {}) {
  const text = String(raw ?? "").trim();
  if (text === "") return optional ? { value: null } : { error: "required" };
  if (integer && !INT.test(text)) return { error: "must be a whole number" };
  const value = Number(text);
  if (!Number.isFinite(value)) return { error: "must be a number" };
  return { value };
}

function bounded(check) {
  return (raw, opts) => {
    const parsed = number(raw, opts);
    if (parsed.error || parsed.value === null) return parsed;
    const error = check(parsed.value);
    return error ? { error } : parsed;
  };
}

/** name -> (raw text) -> {value} | {error}. Bounds follow shared/spec/README.md. */
export const FIELDS = {
  temperature: (raw) => bounded((v) => (v > 0 ? null : "must be > 0"))(raw),
  top_p: (raw) => bounded((v) => (v > 0 && v <= 1 ? null : "must be in (0, 1]"))(raw),
  top_k: (raw) => bounded((v) => (v >= 1 ? null : "must be ≥ 1"))(raw, { integer: true }),
  max_tokens: (raw) => bounded((v) => (v >= 0 ? null : "must be ≥ 0 (0: until the model stops)"))(raw, { integer: true }),
  repetition_penalty: (raw) => bounded((v) => (v > 0 ? null : "must be > 0 (1.0 is off)"))(raw),
  logprobs_top_k: (raw) => bounded((v) => (v >= 0 && v <= 20 ? null : "must be in [0, 20]"))(raw, { integer: true }),
  seed: (raw) =>
    bounded((v) => (v >= 0 && v < 2 ** 63 ? null : "must be ≥ 0"))(raw, { integer: true, optional: true }),
};

export function parseField(name, raw) {
  const parser = FIELDS[name];
  if (!parser) throw new Error(`no parser for ${name}`);
  return parser(raw);
}

/** The JSON-schema textarea: a JSON object. */
export function parseJsonSchema(text) {
  if (!String(text).trim()) return { error: "a JSON schema is required" };
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return { error: "must be a JSON object" };
    }
    return { value: text };
  } catch (exc) {
    return { error: `not valid JSON: ${exc.message}` };
  }
}

export function parseGrammar(text) {
  return String(text).trim() ? { value: text } : { error: "a grammar is required" };
}

/** At most 4 stop strings; blanks are dropped. */
export function parseStops(values) {
  const kept = values.filter((s) => s !== "");
  return kept.length <= 4 ? { value: kept } : { error: "at most 4 stop strings" };
}

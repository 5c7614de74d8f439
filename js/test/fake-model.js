// A stand-in for anywidget's model: get/set/on/off/save_changes/send with Backbone-like events.

export function fakeModel(initial = {}) {
  const state = {
    content: "Once upon a time",
    model_name: "m1",
    model_ids: ["m1", "m2"],
    strategy: "greedy",
    temperature: 0.8,
    top_p: 0.95,
    top_k: 40,
    max_tokens: 64,
    repetition_penalty: 1.0,
    stop_strings: [],
    logprobs_top_k: 5,
    response_format: "none",
    json_schema: "",
    grammar: "",
    grammar_syntax: "gbnf",
    seed: null,
    chat: false,
    completed_run: 0,
    color_by: "probability",
    status: "idle",
    run: 0,
    tokens: [],
    text: "",
    prompt_echo: "",
    metrics: {},
    error: {},
    invalid: {},
    branch: null,
    ...initial,
  };
  const handlers = new Map();
  const model = {
    sent: [],
    saves: 0,
    get: (k) => state[k],
    set(k, v) {
      state[k] = v;
      model.emit(`change:${k}`);
    },
    save_changes() {
      model.saves += 1;
    },
    send(msg) {
      model.sent.push(msg);
    },
    on(event, fn) {
      if (!handlers.has(event)) handlers.set(event, new Set());
      handlers.get(event).add(fn);
    },
    off(event, fn) {
      handlers.get(event)?.delete(fn);
    },
    emit(event, ...args) {
      for (const fn of handlers.get(event) ?? []) fn(...args);
    },
    /** What the kernel does: a custom message to every view. */
    kernelSends(msg) {
      model.emit("msg:custom", msg, []);
    },
    listenerCount: () => [...handlers.values()].reduce((n, s) => n + s.size, 0),
  };
  return model;
}

/** A token as the kernel sends it. */
export function tok(index, text, p = 0.6, extra = {}) {
  return {
    index,
    text,
    logprob: Math.log(p),
    rank: 1,
    top: [
      [text, Math.log(p)],
      [" dog", Math.log(0.3)],
      [" bird", Math.log(0.1)],
    ],
    entropy: 0.9,
    forced: false,
    ...extra,
  };
}

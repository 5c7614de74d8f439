import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget from "../src/index.js";
import { fakeModel, tok } from "./fake-model.js";

let el;
let cleanup;

function mount(model) {
  el = document.createElement("div");
  document.body.append(el);
  cleanup = widget.render({ model, el });
  return el;
}

const button = (name) => [...el.querySelectorAll("button")].find((b) => b.textContent === name);
const input = (name) => el.querySelector(`[name="${name}"]`);
const type = (node, value) => {
  node.value = value;
  node.dispatchEvent(new Event("input", { bubbles: true }));
};
const tokens = () => [...el.querySelectorAll(".nbc-tokens [data-token-index]")];

beforeEach(() => {
  document.body.replaceChildren();
});
afterEach(() => {
  if (cleanup) cleanup();
  cleanup = null;
});

describe("controls", () => {
  it("has Generate and Stop buttons; Generate sends the request, Stop only while running", () => {
    const model = fakeModel();
    mount(model);
    expect(button("Generate").disabled).toBe(false);
    expect(button("Stop").disabled).toBe(true);
    button("Generate").click();
    expect(model.sent).toEqual([{ type: "generate" }]);
    model.set("status", "running");
    expect(button("Generate").disabled).toBe(true);
    expect(button("Stop").disabled).toBe(false);
    button("Stop").click();
    expect(model.sent.at(-1)).toEqual({ type: "stop" });
    expect(el.querySelector('[role="status"]').textContent).toBe("Stopping…");
    model.set("status", "stopped");
    expect(el.querySelector('[role="status"]').textContent).toBe("Stopped");
  });

  it("shows only the inputs of the chosen strategy", () => {
    const model = fakeModel();
    mount(model);
    const shown = (name) => !input(name).closest(".nbc-field").hidden;
    expect([shown("temperature"), shown("top_p"), shown("top_k")]).toEqual([false, false, false]);
    input("strategy").value = "top_p";
    input("strategy").dispatchEvent(new Event("change"));
    expect(model.get("strategy")).toBe("top_p");
    expect([shown("temperature"), shown("top_p"), shown("top_k")]).toEqual([true, true, false]);
    model.set("strategy", "top_k"); // set from Python
    expect(input("strategy").value).toBe("top_k");
    expect([shown("temperature"), shown("top_p"), shown("top_k")]).toEqual([false, false, true]);
  });

  it("flags an invalid value at its control and sends nothing", () => {
    const model = fakeModel({ strategy: "top_p" });
    mount(model);
    type(input("temperature"), "-1");
    expect(input("temperature").getAttribute("aria-invalid")).toBe("true");
    expect(el.querySelector('[data-field="temperature"] .nbc-field-error').textContent).toBe("must be > 0");
    expect(model.get("temperature")).toBe(0.8); // the model keeps the last valid value
    expect(button("Generate").disabled).toBe(true);
    button("Generate").click();
    el.querySelector(".nbc-controls").dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", ctrlKey: true, bubbles: true }));
    expect(model.sent).toEqual([]);
    type(input("temperature"), "0.3");
    expect(input("temperature").hasAttribute("aria-invalid")).toBe(false);
    expect(model.get("temperature")).toBe(0.3);
    expect(button("Generate").disabled).toBe(false);
  });

  it("shows the kernel's flags (the invalid trait) too, and opens 'More options' for hidden ones", () => {
    const model = fakeModel();
    mount(model);
    model.set("invalid", { logprobs_top_k: "must be in [0, 20]" });
    expect(input("logprobs_top_k").getAttribute("aria-invalid")).toBe("true");
    expect(el.querySelector("details.nbc-more").open).toBe(true);
    expect(button("Generate").disabled).toBe(true);
  });

  it("generates on Ctrl+Enter and Cmd+Enter after saving pending edits", () => {
    const model = fakeModel();
    mount(model);
    type(input("content"), "Hello there");
    const saves = model.saves;
    const prompt = input("content");
    prompt.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", ctrlKey: true, bubbles: true }));
    prompt.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", metaKey: true, bubbles: true }));
    expect(model.get("content")).toBe("Hello there");
    expect(model.saves).toBeGreaterThan(saves);
    expect(model.sent).toEqual([{ type: "generate" }, { type: "generate" }]);
  });

  it("edits stop strings with escapes, the JSON schema and the model list", () => {
    const model = fakeModel();
    mount(model);
    const stops = el.querySelectorAll("input.nbc-stop");
    expect(stops).toHaveLength(4);
    type(stops[0], "\\n\\n");
    type(stops[2], "END");
    expect(model.get("stop_strings")).toEqual(["\n\n", "END"]);
    input("response_format").value = "json_schema";
    input("response_format").dispatchEvent(new Event("change"));
    expect(input("json_schema").closest(".nbc-field").hidden).toBe(false);
    type(input("json_schema"), "{bad");
    expect(input("json_schema").getAttribute("aria-invalid")).toBe("true");
    type(input("json_schema"), '{"type": "object"}');
    expect(input("json_schema").hasAttribute("aria-invalid")).toBe(false);
    expect([...input("model_name").options].map((o) => o.value)).toEqual(["m1", "m2"]);
    input("model_name").dispatchEvent(new FocusEvent("focus"));
    expect(model.sent.at(-1)).toEqual({ type: "models" });
    model.set("model_ids", ["m1", "m2", "m3"]);
    expect(input("model_name").options).toHaveLength(3);
  });
});

describe("streaming output", () => {
  it("appends delta tokens without re-rendering, then keeps them when the final traits land", () => {
    const model = fakeModel();
    mount(model);
    model.set("run", 1);
    model.set("status", "running");
    model.kernelSends({ type: "delta", run: 1, start: 0, tokens: [tok(0, " the"), tok(1, " cat")], metrics: { tokens: 2 } });
    const first = tokens()[0];
    model.kernelSends({ type: "delta", run: 1, start: 2, tokens: [tok(2, " sat")], metrics: { tokens: 3, tokens_per_second: 20 } });
    expect(tokens().map((t) => t.textContent)).toEqual(["·the", "·cat", "·sat"]);
    expect(tokens()[0]).toBe(first); // appended, not rebuilt
    expect(el.querySelector(".nbc-metrics").textContent).toBe("3 tokens · 20.0 tokens/s");
    model.set("tokens", [tok(0, " the"), tok(1, " cat"), tok(2, " sat")]);
    model.set("status", "done");
    expect(tokens()[0]).toBe(first);
    expect(el.querySelector('[role="status"]').dataset.status).toBe("done");
  });

  it("renders the final traits when a delta went missing", () => {
    const model = fakeModel({ run: 1, status: "running" });
    mount(model);
    model.kernelSends({ type: "delta", run: 1, start: 0, tokens: [tok(0, "a")] });
    model.set("tokens", [tok(0, "a"), tok(1, "b"), tok(2, "c")]);
    model.set("status", "done");
    expect(tokens().map((t) => t.textContent)).toEqual(["a", "b", "c"]);
  });

  it("ignores deltas of an older run and asks for a snapshot after a gap", () => {
    const model = fakeModel({ run: 2, status: "running" });
    mount(model);
    expect(model.sent).toEqual([{ type: "snapshot" }]); // opened mid-run
    model.kernelSends({ type: "delta", run: 1, start: 0, tokens: [tok(0, "old")] });
    expect(tokens()).toHaveLength(0);
    model.kernelSends({ type: "delta", run: 2, start: 5, tokens: [tok(5, "x")] });
    expect(model.sent.at(-1)).toEqual({ type: "snapshot" });
    model.kernelSends({ type: "snapshot", run: 2, tokens: [0, 1, 2, 3, 4, 5].map((i) => tok(i, `t${i}`)) });
    expect(tokens()).toHaveLength(6);
  });

  it("renders a re-opened view completely from the traits", () => {
    const model = fakeModel({
      run: 4,
      status: "stopped",
      prompt_echo: "Q:",
      tokens: [tok(0, " A"), tok(1, "\n"), tok(2, " B", 0.1, { branch: true, rank: 2 })],
      metrics: { tokens: 3, cancelled: true },
    });
    mount(model);
    expect(el.querySelector(".nbc-prompt-echo").textContent).toBe("Q:");
    expect(tokens()).toHaveLength(3);
    expect(tokens()[1].querySelector("br")).not.toBeNull();
    expect(tokens()[2].classList.contains("nbc-branch")).toBe(true);
    expect(el.querySelector('[role="status"]').textContent).toBe("Stopped");
  });

  it("starts a new run from the prefix the traits carry", () => {
    const model = fakeModel({ run: 1, status: "done", tokens: [tok(0, "a"), tok(1, "b"), tok(2, "c")] });
    mount(model);
    model.set("run", 2);
    model.set("tokens", [tok(0, "a"), tok(1, "X", 0.3, { branch: true })]);
    model.set("status", "running");
    expect(tokens().map((t) => t.textContent)).toEqual(["a", "X"]);
    model.kernelSends({ type: "delta", run: 2, start: 2, tokens: [tok(2, "y")] });
    expect(tokens().map((t) => t.textContent)).toEqual(["a", "X", "y"]);
  });

  it("shows the engine's error title and detail", () => {
    const model = fakeModel();
    mount(model);
    const box = el.querySelector('[role="alert"]');
    expect(box.hidden).toBe(true);
    model.set("error", { status: 404, title: "Not Found", detail: "model_id: unknown model 'x'" });
    model.set("status", "error");
    expect(box.hidden).toBe(false);
    expect(box.textContent).toContain("404 Not Found");
    expect(box.textContent).toContain("unknown model 'x'");
    model.set("error", {});
    expect(box.hidden).toBe(true);
  });
});

describe("heatmap interaction", () => {
  it("hover or focus shows the alternatives in the role=tooltip element; a click branches", () => {
    const model = fakeModel({ run: 1, status: "done", tokens: [tok(0, " the"), tok(1, " cat", 0.55)] });
    mount(model);
    const tip = el.querySelector('[role="tooltip"]');
    expect(tip.hidden).toBe(true);
    tokens()[1].dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toMatch(/55\.0%.*rank 1/);
    expect([...tip.querySelectorAll("button")].map((b) => b.dataset.altText)).toEqual([" cat", " dog", " bird"]);
    tokens()[0].dispatchEvent(new FocusEvent("focusin", { bubbles: true }));
    expect(tip.querySelector(".nbc-tip-head").textContent).toMatch(/^#0/);
    tip.querySelectorAll("button")[1].click();
    expect(model.sent.at(-1)).toEqual({ type: "branch", index: 0, text: " dog" });
  });

  it("lets the keyboard reach the alternatives: Enter on a token, Escape back", () => {
    const model = fakeModel({ run: 1, status: "done", tokens: [tok(0, " the"), tok(1, " cat")] });
    mount(model);
    const tip = el.querySelector('[role="tooltip"]');
    tokens()[0].focus();
    tokens()[0].dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight", bubbles: true }));
    expect(document.activeElement).toBe(tokens()[1]);
    tokens()[1].dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    expect(tip.hidden).toBe(false);
    expect(document.activeElement.dataset.altText).toBe(" cat");
    document.activeElement.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true, cancelable: true }));
    expect(tip.hidden).toBe(true);
    expect(document.activeElement).toBe(tokens()[1]);
  });

  it("after a pick, no tooltip pops up on the token redrawn under the still pointer", () => {
    const model = fakeModel({ run: 1, status: "done", tokens: [tok(0, " the"), tok(1, " cat", 0.55)] });
    mount(model);
    const tip = el.querySelector('[role="tooltip"]');
    tokens()[1].dispatchEvent(new MouseEvent("mouseover", { bubbles: true, clientX: 50, clientY: 20 }));
    tip.querySelectorAll("button")[1].dispatchEvent(new MouseEvent("click", { bubbles: true, clientX: 60, clientY: 40 }));
    expect(model.sent.at(-1)).toEqual({ type: "branch", index: 1, text: " dog" });
    // the kernel starts the branch: the tokens are redrawn, another one now lies under the pointer
    model.set("run", 2);
    model.set("tokens", [tok(0, " the"), { ...tok(1, " dog", 0.3), branch: true }]);
    tokens()[0].dispatchEvent(new MouseEvent("mouseover", { bubbles: true, clientX: 60, clientY: 40 }));
    tokens()[0].dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 61, clientY: 40 }));
    expect(tip.hidden).toBe(true);
    // once the pointer really moves, hovering works again
    tokens()[0].dispatchEvent(new MouseEvent("mousemove", { bubbles: true, clientX: 90, clientY: 40 }));
    expect(tip.hidden).toBe(false);
    expect(tip.querySelector(".nbc-tip-head").textContent).toMatch(/^#0/);
  });

  it("tells a stop-string match from the model's end token in the status", () => {
    const model = fakeModel({ run: 1, status: "done", metrics: { tokens: 3, stop_reason: "end_of_turn", stop_string: "." } });
    mount(model);
    const status = el.querySelector('[role="status"]');
    expect(status.textContent).toBe('Done (stop string ".")');
    model.set("metrics", { tokens: 3, stop_reason: "end_of_turn" });
    expect(status.textContent).toBe("Done (end of turn: the model's end token)");
  });

  it("explains italic (grammar-forced) tokens in the legend only when there are some", () => {
    const model = fakeModel({ run: 1, status: "done", tokens: [tok(0, "a"), tok(1, "b")] });
    mount(model);
    expect(el.querySelector(".nbc-legend").textContent).not.toMatch(/grammar/);
    model.set("run", 2);
    model.set("tokens", [tok(0, "{", 1, { forced: true })]);
    expect(el.querySelector(".nbc-legend").textContent).toMatch(/forced by the grammar/);
  });

  it("recolours by entropy and swaps the legend", () => {
    const model = fakeModel({ run: 1, status: "done", tokens: [tok(0, "a", 0.99, { entropy: 3.9 })] });
    mount(model);
    const before = tokens()[0].style.background;
    const select = input("color_by");
    select.value = "entropy";
    select.dispatchEvent(new Event("change"));
    expect(model.get("color_by")).toBe("entropy");
    expect(tokens()[0].style.background).not.toBe(before);
    expect(el.querySelector(".nbc-legend").textContent).toMatch(/nats/);
  });

  it("removes its listeners on cleanup", () => {
    const model = fakeModel();
    mount(model);
    cleanup();
    cleanup = null;
    expect(model.listenerCount()).toBe(0);
  });
});

// The ⟨end⟩ chip: shown where the text stops when a run ended on the model's end token, not
// after a stop string, max tokens, or while running.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget from "../src/index.js";
import { fakeModel, tok } from "./fake-model.js";

let cleanup;
const mount = (model) => {
  const el = document.createElement("div");
  document.body.append(el);
  cleanup = widget.render({ model, el });
  return el;
};
beforeEach(() => document.body.replaceChildren());
afterEach(() => cleanup && cleanup());

describe("the end chip", () => {
  it("marks a run that ended on the end token, even with no text", () => {
    const model = fakeModel({ status: "running", tokens: [] });
    const el = mount(model);
    const chip = el.querySelector(".nbc-text .nbc-end");
    expect(chip.hidden).toBe(true);
    model.set("metrics", { tokens: 0, stop_reason: "end_of_turn" });
    model.set("status", "done");
    expect(chip.hidden).toBe(false);
    expect(chip.textContent).toBe("⟨end⟩");
    expect(chip.previousElementSibling.className).toBe("nbc-tokens"); // where the text stops
  });
  it("is not shown after a stop string or max tokens", () => {
    const model = fakeModel({ status: "done", tokens: [tok(0, " a", -0.1)], metrics: { tokens: 1, stop_reason: "end_of_turn", stop_string: "\n" } });
    const el = mount(model);
    expect(el.querySelector(".nbc-end").hidden).toBe(true);
    model.set("metrics", { tokens: 1, stop_reason: "out_of_tokens" });
    expect(el.querySelector(".nbc-end").hidden).toBe(true);
  });
});

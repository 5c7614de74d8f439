import { afterEach, describe, expect, it } from "vitest";
import { metricsLine } from "../src/format.js";
import widget from "../src/index.js";
import { fakeModel } from "./fake-model.js";

let cleanup;
afterEach(() => {
  if (cleanup) cleanup();
  cleanup = null;
  document.body.replaceChildren();
});

function mount(model) {
  const el = document.createElement("div");
  document.body.append(el);
  cleanup = widget.render({ model, el });
  return el;
}

describe("chat toggle", () => {
  it("is a checkbox bound to the chat trait, both ways", () => {
    const model = fakeModel();
    const el = mount(model);
    const box = el.querySelector('[name="chat"]');
    expect(box.type).toBe("checkbox");
    expect(box.checked).toBe(false);
    box.checked = true;
    box.dispatchEvent(new Event("change"));
    expect(model.get("chat")).toBe(true);
    model.set("chat", false); // set from Python
    expect(box.checked).toBe(false);
  });
});

describe("end of a run", () => {
  it("acknowledges the finished run from the browser (reactive hosts re-run on front-end changes)", () => {
    const model = fakeModel();
    mount(model);
    model.set("run", 3);
    model.set("status", "running");
    expect(model.get("completed_run")).toBe(0);
    const saves = model.saves;
    model.set("status", "done");
    expect(model.get("completed_run")).toBe(3);
    expect(model.saves).toBe(saves + 1);
    model.set("status", "done"); // the same run again: no second save
    expect(model.saves).toBe(saves + 1);
  });

  it("marks a constrained run cut by max tokens as incomplete", () => {
    expect(metricsLine({ tokens: 8, incomplete: true })).toContain("incomplete");
    expect(metricsLine({ tokens: 8 })).not.toContain("incomplete");
    expect(metricsLine({ tokens: 8, weights: "Q4_1 weights, float32 activations" })).toBe(
      "8 tokens · Q4_1 weights, float32 activations",
    );
  });
});

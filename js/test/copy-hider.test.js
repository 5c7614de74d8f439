import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget from "../src/index.js";
import { copyHiderCss } from "../src/copy_hider.js";
import { fakeModel } from "./fake-model.js";

// Two saved copies in the page: this widget's and one from before a kernel restart.
function copies() {
  const own = document.createElement("div");
  own.className = "nbc-static-copy";
  own.dataset.nbcCopy = "abc123";
  const old = document.createElement("div");
  old.className = "nbc-static-copy";
  old.dataset.nbcCopy = "old999";
  document.body.append(own, old);
  return { own, old };
}

let cleanup = null;
beforeEach(() => document.body.replaceChildren());
afterEach(() => {
  if (cleanup) cleanup();
  cleanup = null;
});

describe("static copy hider", () => {
  it("hides only the copy carrying this widget's key, and only while the view is mounted", () => {
    const { own, old } = copies();
    const el = document.createElement("div");
    document.body.append(el);
    cleanup = widget.render({ model: fakeModel({ copy_key: "abc123" }), el });
    expect(getComputedStyle(own).display).toBe("none");
    expect(getComputedStyle(old).display).not.toBe("none");
    cleanup();
    cleanup = null;
    expect(getComputedStyle(own).display).not.toBe("none");
  });

  it("writes no rule for a missing or unsafe key (no global hiding, no CSS injection)", () => {
    expect(copyHiderCss("")).toBe("");
    expect(copyHiderCss(undefined)).toBe("");
    expect(copyHiderCss('x"] , * {')).toBe("");
    expect(copyHiderCss("k1")).toContain('[data-nbc-copy="k1"]');
  });
});

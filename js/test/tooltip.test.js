import { describe, expect, it, vi } from "vitest";
import { createTooltip, tooltipContent } from "../src/tooltip.js";
import { tok } from "./fake-model.js";

describe("tooltip content", () => {
  it("lists the alternatives with probabilities and marks the chosen one and its rank", () => {
    const box = document.createElement("div");
    box.append(tooltipContent(document, tok(3, " cat", 0.6)));
    expect(box.querySelector(".nbc-tip-head").textContent).toMatch(/#3 ·cat 60\.0% · rank 1 · entropy 0\.90 nats/);
    const rows = [...box.querySelectorAll("button.nbc-alt")];
    expect(rows.map((b) => b.dataset.altText)).toEqual([" cat", " dog", " bird"]);
    expect(rows.map((b) => b.querySelector(".nbc-alt-p").textContent)).toEqual(["60.0% (chosen)", "30.0%", "10.0%"]);
    expect(rows[0].getAttribute("aria-current")).toBe("true");
  });
  it("says when the chosen token is outside the top-k, or when none were recorded", () => {
    const box = document.createElement("div");
    box.append(tooltipContent(document, tok(0, " zebra", 0.01, { rank: 7 })));
    // the fake's top list starts with the token itself; make one without it
    const outside = { ...tok(0, " zebra", 0.01, { rank: 7 }), top: [[" a", -0.1]] };
    box.replaceChildren(tooltipContent(document, outside));
    expect(box.textContent).toMatch(/rank 7, outside the top 1/);
    box.replaceChildren(tooltipContent(document, { ...outside, top: [] }));
    expect(box.textContent).toMatch(/No alternatives recorded/);
  });
});

describe("partial characters in the tooltip", () => {
  it("shows a partial token's bytes, keeps partial alternatives apart and does not offer them for branching", () => {
    const token = {
      ...tok(2, "", 0.4),
      piece: "‹E3 81›",
      top: [
        ["‹E3 81›", Math.log(0.4)],
        ["‹E3 82›", Math.log(0.3)],
        [" yes", Math.log(0.2)],
      ],
    };
    const box = document.createElement("div");
    box.append(tooltipContent(document, token));
    expect(box.querySelector(".nbc-tip-head").textContent).toMatch(/#2 ‹E3 81› 40\.0% .*part of a character/);
    const rows = [...box.querySelectorAll("button.nbc-alt")];
    expect(rows.map((b) => b.querySelector("code").textContent)).toEqual(["‹E3 81›", "‹E3 82›", "·yes"]);
    expect(rows[0].getAttribute("aria-current")).toBe("true"); // the chosen one, by rank
    expect(rows.map((b) => b.disabled)).toEqual([true, true, false]);
    expect(box.querySelectorAll(".nbc-bytes")).toHaveLength(3); // head + two alternatives
  });
});

describe("tooltip element", () => {
  it("is a role=tooltip element shown for a token and described by it; a click picks an alternative", () => {
    const root = document.createElement("div");
    document.body.append(root);
    const onPick = vi.fn();
    const tip = createTooltip(root, { onPick });
    const anchor = document.createElement("span");
    root.append(anchor);
    expect(tip.el.getAttribute("role")).toBe("tooltip");
    expect(tip.el.hidden).toBe(true);
    tip.show(anchor, tok(5, " sat"));
    expect(tip.el.hidden).toBe(false);
    expect(anchor.getAttribute("aria-describedby")).toBe(tip.el.id);
    tip.el.querySelectorAll("button")[1].click();
    expect(onPick).toHaveBeenCalledWith(5, " dog", expect.any(Event));
    expect(tip.el.hidden).toBe(true);
    expect(anchor.hasAttribute("aria-describedby")).toBe(false);
  });
  it("hides after a delay unless the pointer moves onto it", () => {
    vi.useFakeTimers();
    const root = document.createElement("div");
    const tip = createTooltip(root, { delay: 100 });
    const anchor = document.createElement("span");
    tip.show(anchor, tok(0, "a"));
    tip.scheduleHide();
    tip.el.dispatchEvent(new Event("mouseenter"));
    vi.advanceTimersByTime(500);
    expect(tip.el.hidden).toBe(false);
    tip.el.dispatchEvent(new Event("mouseleave"));
    vi.advanceTimersByTime(150);
    expect(tip.el.hidden).toBe(true);
    vi.useRealTimers();
  });
});

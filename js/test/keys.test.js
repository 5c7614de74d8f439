import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget from "../src/index.js";
import { fakeModel } from "./fake-model.js";

let cleanup = null;
let cell;
let seen;
beforeEach(() => {
  document.body.replaceChildren();
  // a JupyterLab-like cell that listens for keys, as the notebook's command handling does
  cell = document.createElement("div");
  cell.className = "jp-Cell";
  cell.tabIndex = -1;
  seen = [];
  cell.addEventListener("keydown", (e) => seen.push(e.key));
  document.body.append(cell);
  const el = document.createElement("div");
  cell.append(el);
  cleanup = widget.render({ model: fakeModel(), el });
});
afterEach(() => {
  if (cleanup) cleanup();
  cleanup = null;
});

const press = (target, key) => target.dispatchEvent(new KeyboardEvent("keydown", { key, bubbles: true, cancelable: true }));

describe("the widget keeps its keys", () => {
  it("arrow keys, Enter and letters inside the panel never reach the notebook", () => {
    const button = cell.querySelector("button");
    for (const key of ["ArrowUp", "ArrowDown", "Enter", "a", "b", "j", "k"]) press(button, key);
    expect(seen).toEqual([]);
  });

  it("Escape leaves the widget for its notebook cell and goes on to the notebook", () => {
    const button = cell.querySelector("button");
    button.focus();
    expect(document.activeElement).toBe(button);
    press(button, "Escape");
    expect(seen).toEqual(["Escape"]);
    expect(document.activeElement).toBe(cell);
  });
});

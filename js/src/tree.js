// The branch tree (role="tree", one role="treeitem" per path, the original run first): every
// Generate, Step, branch and forced token keeps its path; each item says where it split, the
// token chosen there and the path's cumulative log-probability. Click, Enter or Space shows a
// path (nothing re-runs); ArrowUp/ArrowDown/Home/End move between items (roving tabindex).

function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const KIND = { generate: "Generate", step: "Step", branch: "alternative", force: "forced", score: "Score" };

/** An item's label: "original run · 12 tokens · Σ log p −10.31", "at #5 → ' cat' (forced) · …". */
export function itemText(item) {
  const tail = `${item.tokens} token${item.tokens === 1 ? "" : "s"} · Σ log p ${item.logprob.toFixed(2)}`;
  if (item.parent === null || item.parent === undefined) return `original run (${KIND[item.kind] || item.kind}) · ${tail}`;
  const token = item.token === null || item.token === undefined ? "" : ` → ${JSON.stringify(item.token)}`;
  return `at #${item.split}${token} (${KIND[item.kind] || item.kind}) · ${tail}`;
}

export function createTreeView(model, { onShow } = {}) {
  const doc = globalThis.document;
  const root = el(doc, "div", "nbc-tree-wrap");
  const title = el(doc, "div", "nbc-tree-title", "Branches");
  const list = el(doc, "ul", "nbc-tree");
  list.setAttribute("role", "tree");
  list.setAttribute("aria-label", "Branch tree");
  root.append(title, list);

  function render() {
    const items = model.get("tree") || [];
    root.hidden = items.length === 0;
    const focused = doc.activeElement && list.contains(doc.activeElement) ? doc.activeElement.dataset.branchId : null;
    list.replaceChildren();
    for (const item of items) {
      const li = el(doc, "li", "nbc-tree-item", itemText(item));
      li.setAttribute("role", "treeitem");
      li.setAttribute("aria-level", String(item.depth + 1));
      li.setAttribute("aria-selected", String(Boolean(item.current)));
      li.dataset.branchId = String(item.id);
      li.tabIndex = item.current ? 0 : -1;
      li.style.paddingLeft = `${0.4 + 1.2 * item.depth}em`;
      li.title = "Show this branch";
      list.append(li);
    }
    if (!list.querySelector('[tabindex="0"]') && list.firstChild) list.firstChild.tabIndex = 0;
    if (focused !== null) {
      const again = list.querySelector(`[data-branch-id="${focused}"]`);
      if (again) again.focus();
    }
  }
  const show = (li) => {
    if (li && onShow) onShow(Number(li.dataset.branchId));
  };
  list.addEventListener("click", (e) => show(e.target.closest('[role="treeitem"]')));
  list.addEventListener("keydown", (e) => {
    const li = e.target.closest('[role="treeitem"]');
    if (!li) return;
    const items = [...list.querySelectorAll('[role="treeitem"]')];
    const at = items.indexOf(li);
    let next = null;
    if (e.key === "ArrowDown") next = items[at + 1];
    else if (e.key === "ArrowUp") next = items[at - 1];
    else if (e.key === "Home") next = items[0];
    else if (e.key === "End") next = items[items.length - 1];
    else if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      show(li);
      return;
    }
    if (next) {
      e.preventDefault();
      items.forEach((x) => (x.tabIndex = -1));
      next.tabIndex = 0;
      next.focus();
    }
  });
  model.on("change:tree", render);
  render();
  return { el: root, list, render, destroy: () => model.off("change:tree", render) };
}

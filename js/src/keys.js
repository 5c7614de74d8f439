// The widget keeps its keys: no keydown inside the panel reaches JupyterLab's command handling
// (ArrowUp/Down would move the active cell, "A"/"B" insert cells, ...). Escape is the way out:
// unless a view inside handled it (closed a tooltip: defaultPrevented), it leaves the widget and
// goes on to the notebook, which enters command mode on its cell.

export function keepKeys(root) {
  const onKeydown = (e) => {
    if (e.key === "Escape" && !e.defaultPrevented) {
      const active = root.ownerDocument.activeElement;
      if (active && root.contains(active)) active.blur();
      const cell = root.closest(".jp-Cell, .jp-Notebook, [tabindex]:not(.nbc-widget *)");
      if (cell && cell !== root && typeof cell.focus === "function") cell.focus();
      return; // let it reach the notebook
    }
    e.stopPropagation();
  };
  root.addEventListener("keydown", onKeydown);
  return () => root.removeEventListener("keydown", onKeydown);
}

// Hides the static copy (nb_completion/widget/_static.py) of THIS widget while its live view is
// mounted: a <style> scoped to the copy's data-nbc-copy key, removed with the view. Copies of
// other widgets (say, saved before a kernel restart) stay visible.

const SAFE_KEY = /^[A-Za-z0-9_-]+$/;

export function copyHiderCss(key) {
  if (!key || !SAFE_KEY.test(key)) return "";
  const copy = `.nbc-static-copy[data-nbc-copy="${key}"]`;
  return (
    `${copy} { display: none !important; }\n` +
    // JupyterLab: the whole output child, so no empty gap is left under the panel
    `.jp-OutputArea-child:has(${copy}) { display: none; }\n`
  );
}

export function createCopyHider(model) {
  const style = document.createElement("style");
  style.dataset.nbcCopyHider = "";
  const update = () => {
    style.textContent = copyHiderCss(model.get("copy_key"));
  };
  update();
  model.on("change:copy_key", update);
  return {
    el: style,
    destroy() {
      model.off("change:copy_key", update);
      style.remove();
    },
  };
}

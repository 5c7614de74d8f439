// Bundle js/src into nb_completion/static/{widget.js,widget.css}: one ES module, no CDN imports.
// `node build.mjs --watch` rebuilds on change (pair with ANYWIDGET_HMR=1).
import * as esbuild from "esbuild";

const options = {
  entryPoints: { widget: "src/index.js" },
  bundle: true,
  format: "esm",
  target: ["es2020"],
  minify: !process.argv.includes("--watch"),
  sourcemap: false,
  outdir: "../nb_completion/static",
  logLevel: "info",
};

if (process.argv.includes("--watch")) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
}

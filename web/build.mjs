// Builds the pages into dist/: the two HTML files and their bundles (esbuild, from the committed lock: npm ci).
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist/assets", { recursive: true });
cpSync("public", "dist", { recursive: true });
await build({
  entryPoints: ["src/annotate.js", "src/dashboard.js"],
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  sourcemap: true,
  outdir: "dist/assets",
  logLevel: "warning",
});
console.log("web: built dist/ (index.html, dashboard.html, assets/)");

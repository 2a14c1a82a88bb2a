#!/usr/bin/env node
// Bundles the browser viewer (src/web/*.ts) with esbuild into dist/web/: lens-view.js (the HTML
// report's viewer, global LensView), app.js (the `serve` explorer), and their CSS. Run by
// `npm run build` and `prepare` after tsc, so `npm ci` produces it.
import fs from "node:fs";
import { build } from "esbuild";

const out = new URL("../dist/web/", import.meta.url);
fs.mkdirSync(out, { recursive: true });
const common = { bundle: true, format: "iife", target: "es2020", platform: "browser", minify: true, legalComments: "none", logLevel: "warning" };
await build({ ...common, entryPoints: ["src/web/report-entry.ts"], outfile: "dist/web/lens-view.js" });
await build({ ...common, entryPoints: ["src/web/app.ts"], outfile: "dist/web/app.js" });
const css = fs.readFileSync(new URL("../src/web/lens-view.css", import.meta.url), "utf8");
fs.writeFileSync(new URL("lens-view.css", out), css);
fs.writeFileSync(new URL("app.css", out), css + fs.readFileSync(new URL("../src/web/app.css", import.meta.url), "utf8"));

/**
 * The library entry point (src/index.ts, package.json "exports"): the README's example runs as
 * written, importing "logit-lens" by name, on a tiny fixture model instead of the default alias
 * (the only change made to it), and prints what the report says.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { lens, loadModel, toTerminal, FAMILIES } from "../src/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const tiny = path.join(root, "test/fixtures/tiny/llama");

test("the README's library example runs and prints the model's next token", async () => {
  const readme = fs.readFileSync(path.join(root, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## As a library"));
  const code = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(code, "README has a js block under 'As a library'");
  assert.ok(code.split("\n").filter((l) => l.trim()).length <= 10, "ten lines at most");
  assert.ok(code.includes('"smollm2-135m-instruct"'));
  // A file inside the package, so that `import ... from "logit-lens"` resolves through package.json "exports".
  const file = path.join(here, "readme-example.mjs");
  fs.writeFileSync(file, code.replace('"smollm2-135m-instruct"', JSON.stringify(tiny)));
  const out = execFileSync(process.execPath, [file], { encoding: "utf8", cwd: root }).split("\n");

  const model = await loadModel(tiny);
  const report = await lens(model, "The capital of France is", { topK: 5, track: [" Paris"] });
  const next = report.final.positions.at(-1)!.top[0]!;
  assert.equal(out[0], `${next.text} ${next.prob} ${model.config.nLayers}`);
  assert.ok(out.join("\n").includes(toTerminal(report).split("\n")[0]!), "the terminal view is printed");
});

test("the library lists the supported families", () => {
  assert.ok(FAMILIES.map((f) => f.name).includes("qwen3moe"));
});

/**
 * The llama.cpp pre-tokenizer tables (src/tokens/llamacpp-pretokenizers.generated.ts) are exactly
 * what tools/llamacpp/gen-pretokenizers.mjs generates from the llama.cpp source that node-llama-cpp
 * ships: nobody edited them by hand, and a node-llama-cpp upgrade that changes them is noticed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "../helpers/run-cli.js";

const bundle = path.join(REPO_ROOT, "node_modules", "node-llama-cpp", "llama", "gitRelease.bundle");

function gitWorks(): boolean {
  try {
    execFileSync("git", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

test("the pre-tokenizer tables are what the generator writes from node-llama-cpp's llama.cpp", (t) => {
  if (!fs.existsSync(bundle)) return t.skip(`no llama.cpp source bundle at ${bundle}`);
  if (!gitWorks()) return t.skip("git is not installed");
  const script = path.join(REPO_ROOT, "tools", "llamacpp", "gen-pretokenizers.mjs");
  const r = spawnSync(process.execPath, [script, "--check"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr || r.stdout);
});

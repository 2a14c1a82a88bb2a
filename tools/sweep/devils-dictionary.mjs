#!/usr/bin/env node
/**
 * Real English prose with a known licence for sweeps and lens fitting: Ambrose Bierce's "The
 * Devil's Dictionary" (1911, public domain: copyright expired, as its Debian package's copyright
 * file says), from Debian's `dict-devil` package (`apt-get install dict-devil`), 383 KB of text.
 *
 *   node tools/sweep/devils-dictionary.mjs <out-folder> [/usr/share/dictd/devil.dict.dz]
 *
 * writes <out>/train.txt and <out>/heldout.txt: the entries (headword line to the next headword),
 * every 5th entry held out, in dictionary order; the dictd header lines are dropped.
 */
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";

const [out, src = "/usr/share/dictd/devil.dict.dz"] = process.argv.slice(2);
if (!out) {
  console.error("usage: devils-dictionary.mjs <out-folder> [devil.dict.dz]");
  process.exit(2);
}
if (!fs.existsSync(src)) {
  console.error(`${src} not found: apt-get install dict-devil`);
  process.exit(2);
}
const text = zlib.gunzipSync(fs.readFileSync(src)).toString("utf8");
const lines = text.split("\n");
// Entries start with an upper-case headword, a comma and a part of speech: "ABSURDITY, n.  A ..."
const head = /^[A-Z][A-Z'\- ]*[A-Z'], [a-z]/;
const entries = [];
let cur = null;
for (const line of lines) {
  if (head.test(line)) {
    if (cur) entries.push(cur.join("\n").trim());
    cur = [line];
  } else if (cur) cur.push(line);
}
if (cur) entries.push(cur.join("\n").trim());
const train = entries.filter((_, i) => i % 5 !== 4);
const held = entries.filter((_, i) => i % 5 === 4);
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(path.join(out, "train.txt"), train.join("\n\n") + "\n");
fs.writeFileSync(path.join(out, "heldout.txt"), held.join("\n\n") + "\n");
console.log(`${entries.length} entries: ${train.length} train (${path.join(out, "train.txt")}), ${held.length} held out (${path.join(out, "heldout.txt")})`);

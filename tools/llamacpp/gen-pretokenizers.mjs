#!/usr/bin/env node
/**
 * Generates src/tokens/llamacpp-pretokenizers.generated.ts: llama.cpp's BPE pre-tokenizer tables,
 * read from its src/llama-vocab.cpp.
 *
 * - `llm_tokenizer_bpe`'s constructor: the regex list of each pre-type (`case LLAMA_VOCAB_PRE_TYPE_X:
 *   regex_exprs = { ... }`), the `default:` list (pre-type DEFAULT), and the pre-types whose text is
 *   not GPT-2 byte-encoded (`byte_encode = false`).
 * - `llama_vocab::impl::load`: which `tokenizer.ggml.pre` names select each pre-type, with the flags
 *   set next to them (`ignore_merges = true`, `add_bos = true`, `escape_whitespaces = true`,
 *   `special_bos_id = LLAMA_TOKEN_NULL`).
 *
 * Pre-types that unicode.cpp splits with custom code instead of their regexes are left out, and the
 * tokenizer reports them as unsupported.
 *
 * Source: by default the llama.cpp that node-llama-cpp builds (node_modules/node-llama-cpp/llama/
 * gitRelease.bundle, read with git); or `--llama-cpp DIR`, a llama.cpp checkout.
 *
 *   node tools/llamacpp/gen-pretokenizers.mjs            # rewrite the generated file
 *   node tools/llamacpp/gen-pretokenizers.mjs --check    # exit 1 if it is not up to date
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const OUT = path.join(REPO, "src", "tokens", "llamacpp-pretokenizers.generated.ts");
/** Pre-types that unicode.cpp (unicode_regex_split_custom) splits by hand-written code. */
const CUSTOM_CODE = new Set(["AFMOE", "KIMI_K2", "SUPERBPE", "WHITESPACE"]);
/** Settings of the name chain that do not change how a prompt is split into tokens (detokenizing, SEP for encoders). */
const IGNORED_SETTINGS = new Set(["clean_spaces", "add_sep"]);

function parseArgs(argv) {
  const args = { check: false, llamaCpp: undefined, out: OUT };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--check") args.check = true;
    else if (a === "--llama-cpp") args.llamaCpp = argv[++i];
    else if (a === "--out") args.out = path.resolve(argv[++i]);
    else throw new Error(`unknown argument ${a} (use --check, --llama-cpp DIR, --out FILE)`);
  }
  return args;
}

/** llama-vocab.cpp and the commit it comes from. */
function readSource(llamaCpp) {
  if (llamaCpp !== undefined) {
    const text = fs.readFileSync(path.join(llamaCpp, "src", "llama-vocab.cpp"), "utf8");
    let commit = "unknown commit";
    try {
      commit = execFileSync("git", ["-C", llamaCpp, "rev-parse", "HEAD"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    } catch {}
    return { text, commit, from: llamaCpp };
  }
  const bundle = path.join(REPO, "node_modules", "node-llama-cpp", "llama", "gitRelease.bundle");
  if (!fs.existsSync(bundle)) throw new Error(`no llama.cpp source bundle at ${bundle} (npm ci first, or --llama-cpp DIR)`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "logit-lens-llamacpp-"));
  try {
    execFileSync("git", ["clone", "--quiet", "--no-checkout", bundle, tmp], { stdio: "ignore" });
    const text = execFileSync("git", ["-C", tmp, "show", "HEAD:src/llama-vocab.cpp"], { encoding: "utf8", maxBuffer: 64 << 20 });
    const commit = execFileSync("git", ["-C", tmp, "rev-parse", "HEAD"], { encoding: "utf8" }).trim();
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO, "node_modules", "node-llama-cpp", "package.json"), "utf8"));
    return { text, commit, from: `node-llama-cpp ${pkg.version}` };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** The text between `open` (an index just after a `{`) and its matching `}`, skipping strings and comments. */
function block(text, open) {
  let depth = 1;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === '"') i = skipString(text, i);
    else if (c === "/" && text[i + 1] === "/") i = text.indexOf("\n", i);
    else if (c === "/" && text[i + 1] === "*") i = text.indexOf("*/", i) + 1;
    else if (c === "{") depth++;
    else if (c === "}" && --depth === 0) return text.slice(open, i);
  }
  throw new Error("unbalanced braces in llama-vocab.cpp");
}

function skipString(text, i) {
  for (let j = i + 1; j < text.length; j++) {
    if (text[j] === "\\") j++;
    else if (text[j] === '"') return j;
  }
  throw new Error("unterminated string literal");
}

const ESCAPES = { n: "\n", r: "\r", t: "\t", v: "\v", f: "\f", "0": "\0", "\\": "\\", '"': '"', "'": "'", "?": "?" };

/** A C++ string literal's value (the escapes llama-vocab.cpp uses; anything else is refused). */
function literalValue(lit) {
  let out = "";
  for (let i = 1; i < lit.length - 1; i++) {
    if (lit[i] !== "\\") {
      out += lit[i];
      continue;
    }
    const e = lit[++i];
    if (!(e in ESCAPES)) throw new Error(`unsupported escape \\${e} in ${lit}`);
    out += ESCAPES[e];
  }
  return out;
}

/** Statements of a case body as tokens: string literals (adjacent ones joined), identifiers, punctuation. */
function tokens(src) {
  const out = [];
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (/\s/.test(c)) continue;
    if (c === "/" && src[i + 1] === "/") {
      i = src.indexOf("\n", i);
      if (i < 0) break;
    } else if (c === "/" && src[i + 1] === "*") {
      i = src.indexOf("*/", i) + 1;
    } else if (c === '"') {
      const end = skipString(src, i);
      const value = literalValue(src.slice(i, end + 1));
      const last = out[out.length - 1];
      if (last?.str !== undefined) last.str += value;
      else out.push({ str: value });
      i = end;
    } else if (/[A-Za-z_0-9]/.test(c)) {
      let j = i;
      while (j < src.length && /[A-Za-z_0-9]/.test(src[j])) j++;
      out.push({ id: src.slice(i, j) });
      i = j - 1;
    } else if (c === "=" && src[i + 1] === "=") {
      out.push({ p: "==" });
      i++;
    } else if (c === "|" && src[i + 1] === "|") {
      out.push({ p: "||" });
      i++;
    } else {
      out.push({ p: c });
    }
  }
  return out;
}

/** `llm_tokenizer_bpe`'s switch: regex lists by pre-type, and the pre-types without byte encoding. */
function regexTables(text) {
  const ctor = text.indexOf("llm_tokenizer_bpe(const llama_vocab & vocab) {");
  if (ctor < 0) throw new Error("llm_tokenizer_bpe constructor not found");
  const sw = text.indexOf("switch (vocab.get_pre_type()) {", ctor);
  const body = tokens(block(text, text.indexOf("{", sw) + 1));
  const regexes = new Map();
  const noByteEncode = new Set();
  let labels = [];
  let open = false; // the labels above have had statements (a new case starts a new group)
  for (let i = 0; i < body.length; i++) {
    const t = body[i];
    if (t.id === "case") {
      if (open) {
        labels = [];
        open = false;
      }
      const name = body[++i].id;
      if (!name?.startsWith("LLAMA_VOCAB_PRE_TYPE_")) throw new Error(`unexpected case label ${name}`);
      labels.push(name.slice("LLAMA_VOCAB_PRE_TYPE_".length));
      i++; // ':'
    } else if (t.id === "default") {
      if (open) labels = [];
      open = false;
      labels.push("DEFAULT");
      i++;
    } else if (t.id === "regex_exprs" && body[i + 1]?.p === "=") {
      open = true;
      const list = [];
      i += 3; // = {
      for (; body[i].p !== "}"; i++) {
        if (body[i].str !== undefined) list.push(body[i].str);
        else if (body[i].p !== ",") throw new Error(`unexpected token in regex_exprs of ${labels.join(", ")}: ${JSON.stringify(body[i])}`);
      }
      for (const l of labels) regexes.set(l, list);
    } else if (t.id === "byte_encode" && body[i + 1]?.p === "=" && body[i + 2]?.id === "false") {
      open = true;
      for (const l of labels) noByteEncode.add(l);
    } else if (t.id === "break") {
      open = true;
    }
  }
  return { regexes, noByteEncode };
}

/** The `tokenizer_pre == "..."` chain of `load`: names by pre-type, with their flags. */
function nameTable(text) {
  const start = text.indexOf('} else if (tokenizer_pre == "default") {');
  if (start < 0) throw new Error("tokenizer_pre chain not found");
  const stop = text.lastIndexOf("throw", text.indexOf("unknown pre-tokenizer type", start));
  const toks = tokens(text.slice(start, stop));
  const entries = [];
  let names = [];
  let current;
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i];
    if (t.id === "tokenizer_pre" && toks[i + 1]?.p === "==") {
      if (current) {
        current = undefined;
        names = [];
      }
      names.push(toks[i + 2].str);
      i += 2;
    } else if (t.id === "pre_type" && toks[i + 1]?.p === "=") {
      const type = toks[i + 2].id.slice("LLAMA_VOCAB_PRE_TYPE_".length);
      current = { type };
      for (const name of names) entries.push([name, current]);
      i += 2;
    } else if (current && toks[i + 1]?.p === "=") {
      const value = toks[i + 2].id;
      if (t.id === "ignore_merges" && value === "true") current.ignoreMerges = true;
      else if (t.id === "add_bos" && value === "true") current.addBos = true;
      else if (t.id === "escape_whitespaces" && value === "true") current.escapeWhitespace = true;
      else if (t.id === "special_bos_id" && value === "LLAMA_TOKEN_NULL") current.noBos = true;
      else if (!IGNORED_SETTINGS.has(t.id) && !CUSTOM_CODE.has(current.type)) throw new Error(`unexpected setting ${t.id} = ${value} for ${current.type}`);
      i += 2;
    }
  }
  return entries;
}

function render({ regexes, noByteEncode }, names, commit, from) {
  const q = (s) => JSON.stringify(s);
  const lines = [
    "// Generated by tools/llamacpp/gen-pretokenizers.mjs from llama.cpp's src/llama-vocab.cpp",
    `// (${from}, commit ${commit.slice(0, 12)}). Do not edit; run \`node tools/llamacpp/gen-pretokenizers.mjs\`.`,
    "//",
    "// `llm_tokenizer_bpe` regex lists by pre-type, and the `tokenizer.ggml.pre` names that select each",
    "// pre-type. Pre-types that llama.cpp splits with custom code instead of regexes",
    `// (${[...CUSTOM_CODE].map((t) => t.toLowerCase().replace("_", "-")).join(", ")}) are left out and reported as unsupported.`,
    "",
    "export interface PreTokenizerEntry {",
    "  type: string;",
    "  ignoreMerges?: true;",
    "  addBos?: true;",
    "  escapeWhitespace?: true;",
    "  noBos?: true;",
    "}",
    "",
    "export const PRE_TOKENIZER_REGEXES: Readonly<Record<string, readonly string[]>> = {",
  ];
  for (const type of [...regexes.keys()].filter((t) => !CUSTOM_CODE.has(t)).sort()) {
    lines.push(`  ${type}: [`);
    for (const r of regexes.get(type)) lines.push(`    ${q(r)},`);
    lines.push("  ],");
  }
  lines.push("};", "", "export const PRE_TOKENIZER_NAMES: Readonly<Record<string, PreTokenizerEntry>> = {");
  for (const [name, e] of names) {
    const flags = ["ignoreMerges", "addBos", "escapeWhitespace", "noBos"].filter((f) => e[f]).map((f) => `, ${f}: true`).join("");
    lines.push(`  ${q(name)}: { type: ${q(e.type)}${flags} },`);
  }
  lines.push("};", "");
  lines.push("/** Pre-types whose regexes run on raw UTF-8 with ▁ for spaces instead of GPT-2 byte characters. */");
  const nbe = [...noByteEncode].filter((t) => !CUSTOM_CODE.has(t)).sort();
  lines.push(`export const NO_BYTE_ENCODE: ReadonlySet<string> = new Set([${nbe.map(q).join(", ")}]);`, "");
  return lines.join("\n");
}

const args = parseArgs(process.argv.slice(2));
const { text, commit, from } = readSource(args.llamaCpp);
const out = render(regexTables(text), nameTable(text), commit, from);
if (args.check) {
  const current = fs.existsSync(args.out) ? fs.readFileSync(args.out, "utf8") : "";
  if (current !== out) {
    console.error(`${path.relative(REPO, args.out)} is not what ${from} generates: run node tools/llamacpp/gen-pretokenizers.mjs`);
    process.exit(1);
  }
  console.log(`${path.relative(REPO, args.out)} is up to date (${from}, ${commit.slice(0, 12)})`);
} else {
  fs.writeFileSync(args.out, out);
  console.log(`wrote ${path.relative(REPO, args.out)} (${from}, ${commit.slice(0, 12)})`);
}

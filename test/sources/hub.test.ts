/**
 * Hub downloads against a loopback imitation of the hub (test/helpers/hub-server.ts): cache layout,
 * choice of files, resume with Range requests, tokens, and one-line errors.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, readdirSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import { UserError } from "../../src/errors.js";
import { downloadFromHub } from "../../src/sources/hub.js";
import { resolveModelSource } from "../../src/sources/resolve.js";
import { createProgress } from "../../src/progress.js";
import { startHubServer, type HubServer } from "../helpers/hub-server.js";
import { rejectsOneLine } from "../helpers/assert-user-error.js";

const progress = createProgress({ quiet: true });

const BIG = randomBytes(3 * 1024 * 1024 + 123);
const TINY_FILES = {
  "config.json": JSON.stringify({ architectures: ["LlamaForCausalLM"], hidden_size: 8 }),
  "tokenizer.json": JSON.stringify({ model: { type: "BPE", vocab: { a: 0 } } }),
  "tokenizer_config.json": "{}",
  "generation_config.json": "{}",
  "special_tokens_map.json": "{}",
  "model.safetensors": BIG,
  "README.md": "# tiny\n",
  "pytorch_model.bin": randomBytes(1000),
  "onnx/model.onnx": randomBytes(2000),
};
const SHARD1 = randomBytes(200_000);
const SHARD2 = randomBytes(150_000);
const SHARDED_FILES = {
  "config.json": "{}",
  "tokenizer.json": "{}",
  "model.safetensors.index.json": JSON.stringify({
    metadata: { total_size: 350_000 },
    weight_map: { "a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors" },
  }),
  "model-00001-of-00002.safetensors": SHARD1,
  "model-00002-of-00002.safetensors": SHARD2,
  "consolidated.safetensors": randomBytes(5000),
};
const GGUF = Buffer.concat([Buffer.from("GGUF"), randomBytes(50_000)]);

let server: HubServer;
let hfHome: string;

function hubCache(): string {
  return join(hfHome, "hub");
}

function resolveRequests(file: string): typeof server.requests {
  // LFS files are fetched through the /cdn/ redirect; count the requests that carried bytes.
  return server.requests.filter((r) => r.path.includes(`/resolve/`) && r.path.endsWith(`/${file}`));
}

function cdnRequests(): typeof server.requests {
  return server.requests.filter((r) => r.path.startsWith("/cdn/"));
}

before(async () => {
  server = await startHubServer([
    { id: "test-org/tiny-model", files: TINY_FILES },
    { id: "test-org/sharded", files: SHARDED_FILES },
    { id: "test-org/gguf-repo", files: { "README.md": "x", "model-q4.gguf": GGUF, "model-q8.gguf": GGUF } },
    { id: "test-org/gated", files: { "config.json": "{}", "model.safetensors": randomBytes(1000) }, token: "hf_right_token" },
  ]);
  for (const name of ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "HF_ENDPOINT"]) {
    delete process.env[name];
  }
});

after(async () => {
  await server.close();
});

beforeEach(() => {
  hfHome = mkdtempSync(join(tmpdir(), "logit-lens-hf-"));
  process.env["HF_HOME"] = hfHome;
  delete process.env["HF_TOKEN"];
  delete process.env["HF_HUB_OFFLINE"];
  delete process.env["HF_ENDPOINT"];
  server.requests.length = 0;
});

afterEach(() => {
  rmSync(hfHome, { recursive: true, force: true });
});

describe("downloadFromHub", () => {
  test("downloads config, tokenizer and weights into the standard cache layout", async () => {
    const dir = await downloadFromHub("test-org/tiny-model", { progress, hubUrl: server.url });
    const commit = server.commitOf("test-org/tiny-model");
    const repoDir = join(hubCache(), "models--test-org--tiny-model");
    assert.equal(dir, join(repoDir, "snapshots", commit));
    assert.equal(readFileSync(join(repoDir, "refs", "main"), "utf8"), commit);

    const expected = ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"];
    assert.deepEqual(readdirSync(dir).sort(), expected);
    for (const name of expected) {
      const link = join(dir, name);
      assert.ok(lstatSync(link).isSymbolicLink(), `${name} should be a symlink`);
      assert.match(readlinkSync(link), /^\.\.\/\.\.\/blobs\/[0-9a-f]{40,64}$/);
      assert.deepEqual(readFileSync(link), Buffer.from(TINY_FILES[name as keyof typeof TINY_FILES]));
    }
    // The big file's blob is named by its SHA-256 (LFS), the small ones by their git blob id.
    assert.match(readlinkSync(join(dir, "model.safetensors")), /blobs\/[0-9a-f]{64}$/);
    assert.match(readlinkSync(join(dir, "config.json")), /blobs\/[0-9a-f]{40}$/);
    assert.ok(!readdirSync(join(repoDir, "blobs")).some((n) => n.endsWith(".incomplete")));
    // Nothing else was fetched.
    assert.equal(resolveRequests("README.md").length, 0);
    assert.equal(resolveRequests("pytorch_model.bin").length, 0);
    assert.equal(resolveRequests("model.onnx").length, 0);
    assert.equal(cdnRequests().length, 1);

    // A second call asks the API for the commit but downloads nothing.
    server.requests.length = 0;
    const again = await downloadFromHub("test-org/tiny-model", { progress, hubUrl: server.url });
    assert.equal(again, dir);
    assert.equal(server.requests.filter((r) => r.path.includes("/resolve/") || r.path.startsWith("/cdn/")).length, 0);

    // Offline: no request at all.
    server.requests.length = 0;
    process.env["HF_HUB_OFFLINE"] = "1";
    assert.equal(await downloadFromHub("test-org/tiny-model", { progress, hubUrl: server.url }), dir);
    assert.equal(server.requests.length, 0);
    // A commit revision already in the cache needs no request either.
    delete process.env["HF_HUB_OFFLINE"];
    assert.equal(await downloadFromHub("test-org/tiny-model", { progress, hubUrl: server.url, revision: commit }), dir);
    assert.equal(server.requests.length, 0);
  });

  test("HF_HUB_CACHE overrides HF_HOME", async () => {
    const cache = mkdtempSync(join(tmpdir(), "logit-lens-hfcache-"));
    process.env["HF_HUB_CACHE"] = cache;
    try {
      const dir = await downloadFromHub("test-org/tiny-model", { progress, hubUrl: server.url });
      assert.ok(dir.startsWith(join(cache, "models--test-org--tiny-model", "snapshots")));
      assert.ok(!existsSync(hubCache()));
    } finally {
      delete process.env["HF_HUB_CACHE"];
      rmSync(cache, { recursive: true, force: true });
    }
  });

  test("a dropped transfer resumes with a Range request on the next call", async () => {
    server.dropConnection("model.safetensors", 1_000_000, 1);
    await rejectsOneLine(
      downloadFromHub("test-org/tiny-model", { progress, hubUrl: server.url, retries: 0 }),
      /model\.safetensors.*broke off.*run again to resume/,
    );
    const blobs = join(hubCache(), "models--test-org--tiny-model", "blobs");
    const incomplete = readdirSync(blobs).find((n) => n.endsWith(".incomplete"));
    assert.ok(incomplete, "an .incomplete file stays behind");
    const have = statSync(join(blobs, incomplete)).size;
    assert.ok(have > 0 && have <= 1_000_000, `partial size ${have}`);

    server.requests.length = 0;
    const dir = await downloadFromHub("test-org/tiny-model", { progress, hubUrl: server.url, retries: 0 });
    assert.deepEqual(readFileSync(join(dir, "model.safetensors")), BIG);
    const transfers = cdnRequests();
    assert.equal(transfers.length, 1);
    assert.equal(transfers[0]!.range, `bytes=${have}-`);
    assert.equal(transfers[0]!.status, 206);
    assert.equal(transfers[0]!.bytesSent, BIG.length - have);
    assert.ok(!readdirSync(blobs).some((n) => n.endsWith(".incomplete")));
  });

  test("a dropped transfer is retried and resumed within the same call", async () => {
    server.dropConnection("model.safetensors", 2_000_000, 1);
    const dir = await downloadFromHub("test-org/tiny-model", { progress, hubUrl: server.url });
    assert.deepEqual(readFileSync(join(dir, "model.safetensors")), BIG);
    const transfers = cdnRequests();
    assert.equal(transfers.length, 2);
    assert.equal(transfers[0]!.range, undefined);
    assert.match(transfers[1]!.range ?? "", /^bytes=\d+-$/);
    const resumedAt = Number(/\d+/.exec(transfers[1]!.range!)![0]);
    assert.ok(resumedAt > 0);
    assert.equal(transfers[1]!.bytesSent, BIG.length - resumedAt);
  });

  test("only the shards named by the safetensors index are fetched", async () => {
    const dir = await downloadFromHub("test-org/sharded", { progress, hubUrl: server.url });
    assert.deepEqual(readdirSync(dir).sort(), [
      "config.json",
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
      "tokenizer.json",
    ]);
    assert.deepEqual(readFileSync(join(dir, "model-00002-of-00002.safetensors")), SHARD2);
    assert.equal(resolveRequests("consolidated.safetensors").length, 0);
  });

  test("a single .gguf file on request", async () => {
    const dir = await downloadFromHub("test-org/gguf-repo", { progress, hubUrl: server.url, files: ["model-q4.gguf"] });
    assert.deepEqual(readdirSync(dir), ["model-q4.gguf"]);
    assert.deepEqual(readFileSync(join(dir, "model-q4.gguf")), GGUF);
    await rejectsOneLine(
      downloadFromHub("test-org/gguf-repo", { progress, hubUrl: server.url, files: ["nope.gguf"] }),
      /'nope\.gguf' not found.*model-q4\.gguf, model-q8\.gguf/,
    );
  });

  test("unknown repo and unknown revision give one-line errors", async () => {
    await rejectsOneLine(downloadFromHub("test-org/missing", { progress, hubUrl: server.url }), /'test-org\/missing' not found on the hub/);
    await rejectsOneLine(
      downloadFromHub("test-org/tiny-model", { progress, hubUrl: server.url, revision: "v9" }),
      /revision 'v9' not found/,
    );
    await rejectsOneLine(downloadFromHub("not a repo", { progress, hubUrl: server.url }), /not a Hugging Face model id/);
  });

  test("a gated repo: 401 without a token mentions HF_TOKEN; HF_TOKEN is sent as a bearer token", async () => {
    await rejectsOneLine(downloadFromHub("test-org/gated", { progress, hubUrl: server.url }), /401.*HF_TOKEN/);

    process.env["HF_TOKEN"] = "hf_wrong";
    await rejectsOneLine(downloadFromHub("test-org/gated", { progress, hubUrl: server.url }), /HF_TOKEN.*401/);

    process.env["HF_TOKEN"] = "hf_right_token";
    server.requests.length = 0;
    const dir = await downloadFromHub("test-org/gated", { progress, hubUrl: server.url });
    assert.ok(existsSync(join(dir, "model.safetensors")));
    assert.ok(server.requests.length >= 4);
    for (const r of server.requests) {
      if (r.path.startsWith("/cdn/")) continue; // the CDN's URL is signed; no token needed there
      assert.equal(r.authorization, "Bearer hf_right_token", r.path);
    }
  });

  test("the token file under HF_HOME is used when HF_TOKEN is unset", async () => {
    const { writeFileSync } = await import("node:fs");
    writeFileSync(join(hfHome, "token"), "hf_right_token\n");
    const dir = await downloadFromHub("test-org/gated", { progress, hubUrl: server.url });
    assert.ok(existsSync(join(dir, "config.json")));
  });

  test("an unreachable hub gives a one-line error", async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    await rejectsOneLine(
      downloadFromHub("test-org/tiny-model", { progress, hubUrl: `http://127.0.0.1:${port}` }),
      /cannot reach the Hugging Face hub .*ECONNREFUSED/,
    );
  });
});

describe("resolveModelSource with hub ids", () => {
  test("org/name goes through HF_ENDPOINT to a hf-folder; org/name:file.gguf to a gguf", async () => {
    process.env["HF_ENDPOINT"] = server.url;
    const folder = await resolveModelSource("test-org/tiny-model", { progress });
    assert.equal(folder.kind, "hf-folder");
    assert.equal(folder.displayName, "test-org/tiny-model");
    if (folder.kind === "hf-folder") assert.ok(existsSync(join(folder.dir, "config.json")));

    const gguf = await resolveModelSource("test-org/gguf-repo:model-q8.gguf", { progress });
    assert.equal(gguf.kind, "gguf");
    if (gguf.kind === "gguf") assert.deepEqual(readFileSync(gguf.path), GGUF);

    // The cached hub folder itself (models--org--name) resolves through refs/main.
    const cached = await resolveModelSource(join(hubCache(), "models--test-org--tiny-model"), { progress });
    assert.equal(cached.kind, "hf-folder");
    assert.equal(cached.displayName, "test-org/tiny-model");
  });
});

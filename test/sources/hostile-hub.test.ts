/**
 * A hostile hub (a mirror in HF_ENDPOINT, or anyone in the middle of plain http) against the real
 * download code, on the loopback hub (test/helpers/hub-server.ts) with its answers tampered:
 * traversal file names in the file list and in the safetensors index, a file that keeps coming past
 * its announced size, a server that never answers. Every scenario must end in one-line error,
 * quickly, with nothing created outside the cache and no partial file left behind.
 * Bounded: a handful of requests per scenario, each test under a few seconds.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import { downloadFromHub } from "../../src/sources/hub.js";
import type { Progress } from "../../src/progress.js";
import { startHubServer, type HubServer } from "../helpers/hub-server.js";
import { rejectsOneLine } from "../helpers/assert-user-error.js";

/** A progress that records its informational lines (waiting notices). */
function recordingProgress(): Progress & { lines: string[] } {
  const lines: string[] = [];
  return { lines, start() {}, update() {}, done() {}, info: (m: string) => void lines.push(m) };
}

const SHARD = randomBytes(4096);
const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");
const gitSha1 = (b: Buffer): string => createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex");

/** Where a traversal would land: beside the per-test HF_HOME, inside this test's own temp root. */
const root = mkdtempSync(join(tmpdir(), "logit-lens-hostile-"));
const ESCAPE = `escaped-${process.pid}.safetensors`;
/** From snapshots/<commit>/ up five levels (commit, snapshots, models--x--y, hub, HF_HOME) into `root`. */
const TRAVERSAL = `../../../../../${ESCAPE}`;

function index(shard: string): string {
  return JSON.stringify({ metadata: { total_size: SHARD.length }, weight_map: { "a.weight": shard } });
}

/** A file-list entry as the hub gives it (LFS for the shard). */
function entry(path: string, data: Buffer, lfs: boolean): Record<string, unknown> {
  return lfs
    ? { type: "file", path, size: data.length, oid: gitSha1(Buffer.from(`pointer ${path}`)), lfs: { oid: sha256(data), size: data.length, pointerSize: 134 } }
    : { type: "file", path, size: data.length, oid: gitSha1(data) };
}

/** Answers the file list of `repo` with `entries` instead of the truth. */
function fakeTree(res: ServerResponse, entries: Record<string, unknown>[]): true {
  res.writeHead(200, { "Content-Type": "application/json" });
  res.end(JSON.stringify(entries));
  return true;
}

const CONFIG = Buffer.from("{}");
let server: HubServer;
let hfHome: string;
/** Requests held open by the "silent" scenario, released at the end. */
const held: ServerResponse[] = [];

function intercept(req: IncomingMessage, res: ServerResponse, path: string): boolean {
  // 1. Traversal through the index: the file list (and index) name ../../../../../escaped.safetensors.
  if (path.startsWith("/api/models/evil/index-traversal/tree/")) {
    const idx = Buffer.from(index(TRAVERSAL));
    return fakeTree(res, [entry("config.json", CONFIG, false), entry("model.safetensors.index.json", idx, false), entry(TRAVERSAL, SHARD, true)]);
  }
  if (path.startsWith("/evil/index-traversal/resolve/") && path.endsWith("/model.safetensors.index.json")) {
    res.writeHead(200, { "Content-Length": String(Buffer.byteLength(index(TRAVERSAL))) });
    res.end(index(TRAVERSAL));
    return true;
  }
  // Whatever URL the traversal name turns into, a hostile server serves the bytes.
  if (path.endsWith(`/${ESCAPE}`)) {
    res.writeHead(200, { "Content-Length": String(SHARD.length) });
    res.end(SHARD);
    return true;
  }
  // 2. An absolute path in the file list, named by the index too.
  if (path.startsWith("/api/models/evil/absolute/tree/")) {
    const abs = join(root, ESCAPE);
    return fakeTree(res, [entry("config.json", CONFIG, false), entry("model.safetensors.index.json", Buffer.from(index(abs)), false), entry(abs, SHARD, true)]);
  }
  if (path.startsWith("/evil/absolute/resolve/") && path.endsWith("/model.safetensors.index.json")) {
    res.end(index(join(root, ESCAPE)));
    return true;
  }
  // 3. A file that is announced as 4096 bytes and never stops coming.
  if (path.startsWith("/evil/endless/resolve/") && path.endsWith("/model.safetensors")) {
    res.writeHead(200, { "Content-Type": "application/octet-stream" }); // no Content-Length: chunked, endless
    const chunk = randomBytes(64 * 1024);
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk));
      if (!res.destroyed) res.once("drain", pump);
    };
    res.on("close", () => res.removeAllListeners("drain"));
    pump();
    return true;
  }
  // 4. The same, but honest about it in Content-Length: refused before a byte is written.
  if (path.startsWith("/evil/too-long/resolve/") && path.endsWith("/model.safetensors")) {
    const body = Buffer.concat([SHARD, randomBytes(1 << 20)]);
    res.writeHead(200, { "Content-Length": String(body.length) });
    res.end(body);
    return true;
  }
  // 5. A server that accepts the connection and never answers the model-info request.
  if (path.startsWith("/api/models/evil/silent/revision/")) {
    held.push(res);
    return true;
  }
  // 6. A hostile commit id and a hostile blob hash.
  if (path.startsWith("/api/models/evil/bad-commit/revision/")) {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ id: "evil/bad-commit", sha: "../../../../../escaped" }));
    return true;
  }
  if (path.startsWith("/api/models/evil/bad-hash/tree/")) {
    return fakeTree(res, [{ type: "file", path: "config.json", size: 2, oid: "../../../../escaped" }, entry("model.safetensors", SHARD, false)]);
  }
  return false;
}

before(async () => {
  const plain = { "config.json": CONFIG, "tokenizer.json": "{}", "model.safetensors": SHARD };
  server = await startHubServer(
    [
      { id: "evil/index-traversal", files: { "config.json": CONFIG, "model.safetensors.index.json": index(TRAVERSAL) } },
      { id: "evil/absolute", files: { "config.json": CONFIG, "model.safetensors.index.json": "{}" } },
      { id: "evil/endless", files: plain },
      { id: "evil/too-long", files: plain },
      { id: "evil/silent", files: plain },
      { id: "evil/bad-commit", files: plain },
      { id: "evil/bad-hash", files: plain },
    ],
    { intercept },
  );
  for (const name of ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"]) delete process.env[name];
});

after(async () => {
  for (const res of held) res.destroy();
  await server.close();
  rmSync(root, { recursive: true, force: true });
});

beforeEach(() => {
  hfHome = mkdtempSync(join(root, "hf-"));
  process.env["HF_HOME"] = hfHome;
  server.requests.length = 0;
});

afterEach(() => {
  rmSync(hfHome, { recursive: true, force: true });
});

/** Nothing may appear in the test root but the per-test HF_HOME folders. */
function assertNothingEscaped(): void {
  const stray = readdirSync(root).filter((n) => !n.startsWith("hf-"));
  assert.deepEqual(stray, [], `files created outside the cache: ${stray.join(", ")}`);
  assert.ok(!existsSync(join(tmpdir(), ESCAPE)));
}

function incompleteFiles(): string[] {
  const blobs = join(hfHome, "hub");
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name.endsWith(".incomplete")) out.push(join(d, e.name));
    }
  };
  if (existsSync(blobs)) walk(blobs);
  return out;
}

describe("a hostile hub", { timeout: 30_000 }, () => {
  test("shard names that climb out of the snapshot (file list and index) are refused; nothing is written outside", async () => {
    await rejectsOneLine(downloadFromHub("evil/index-traversal", { progress: recordingProgress(), hubUrl: server.url, retries: 0 }), /unsafe file path|not a file inside/);
    assertNothingEscaped();
  });

  test("absolute paths from the server are refused", async () => {
    await rejectsOneLine(downloadFromHub("evil/absolute", { progress: recordingProgress(), hubUrl: server.url, retries: 0 }), /unsafe file path|not a file inside/);
    assertNothingEscaped();
  });

  test("a file that keeps coming past its announced size is cut off at that size, and the partial file deleted", async () => {
    const t0 = Date.now();
    await rejectsOneLine(
      downloadFromHub("evil/endless", { progress: recordingProgress(), hubUrl: server.url, retries: 0 }),
      /sent more than the 4096 bytes it announced for model\.safetensors/,
    );
    assert.ok(Date.now() - t0 < 10_000, "cut off quickly, not after the server gave up");
    assert.deepEqual(incompleteFiles(), []);
  });

  test("a Content-Length past the announced size is refused before anything is written", async () => {
    await rejectsOneLine(
      downloadFromHub("evil/too-long", { progress: recordingProgress(), hubUrl: server.url, retries: 3 }),
      /sent more than the 4096 bytes it announced/,
    );
    // Not retried: a lying server is not a dropped connection.
    assert.equal(server.requests.filter((r) => r.path.includes("/resolve/") && r.path.endsWith("/model.safetensors")).length, 1);
    assert.deepEqual(incompleteFiles(), []);
  });

  test("a hub that never answers the model-info request: a waiting notice, then a one-line timeout", async () => {
    const progress = recordingProgress();
    const t0 = Date.now();
    await rejectsOneLine(
      downloadFromHub("evil/silent", { progress, hubUrl: server.url, requestTimeoutMs: 1500, waitingNoticeMs: 300 }),
      /did not answer within 1\.5 s while fetching the model info of 'evil\/silent'/,
    );
    const took = Date.now() - t0;
    assert.ok(took >= 1400 && took < 8000, `gave up after ${took} ms`);
    assert.ok(progress.lines.some((l) => /waiting for the hub .*model info of evil\/silent/.test(l)), `no waiting notice: ${progress.lines.join(" | ")}`);
  });

  test("a commit id or blob hash that is a path is refused", async () => {
    await rejectsOneLine(downloadFromHub("evil/bad-commit", { progress: recordingProgress(), hubUrl: server.url }), /no (usable )?commit/);
    await rejectsOneLine(downloadFromHub("evil/bad-hash", { progress: recordingProgress(), hubUrl: server.url }), /no usable hash for config\.json/);
    assertNothingEscaped();
  });
});

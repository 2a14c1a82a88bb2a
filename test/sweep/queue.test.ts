/**
 * Issue 9, sweeps over several workers through the real queue: BullMQ on Debian's redis-server
 * (started here on a free port with its append-only file), three `sweep worker` processes, one of
 * them killed with SIGKILL while it holds a unit, Redis restarted once mid-run; the merged results
 * equal the single-process run's: the same summary, and the same Parquet rows, none lost and none
 * doubled. Skipped, saying so, only where redis-server is not installed (`.ci/run` installs it).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Queue } from "bullmq";
import { querySweep } from "../../src/sweep/query.js";
import { redisConnection } from "../../src/sweep/queue.js";
import { CLI_PATH, REPO_ROOT, runCli } from "../helpers/run-cli.js";
import { RedisServer, redisServerPath } from "./redis-server.js";

const TINY = path.join(REPO_ROOT, "test/fixtures/tiny/llama");
const TEXT = path.join(REPO_ROOT, "test/fixtures/sweep/devil-excerpt.txt");
const noRedis = redisServerPath() ? false : "redis-server is not installed (apt-get install redis-server; .ci/run installs it)";

const sweepArgs = (out: string) => ["sweep", "--model", TINY, "--data", TEXT, "--window", "64", "--limit", "96", "--unit-size", "4", "--bootstrap", "200", "--out", out];

function startWorker(url: string, log: string, extra: string[] = []): ChildProcess {
  const fd = fs.openSync(log, "a");
  const child = spawn(process.execPath, [CLI_PATH, "sweep", "worker", "--queue", url, "--lock-seconds", "3", ...extra], { stdio: ["ignore", fd, fd] });
  fs.closeSync(fd);
  return child;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("3 queue workers, one SIGKILLed mid-unit, Redis restarted: the single-process run's rows, none lost, none doubled", { skip: noRedis, timeout: 240_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ll-queue-"));
  const redis = await RedisServer.start(path.join(dir, "redis"));
  const workers: ChildProcess[] = [];
  const queue = new Queue("logit-lens-sweep", { connection: redisConnection(redis.url) });
  queue.on("error", () => undefined);
  try {
    const single = path.join(dir, "single");
    const r = await runCli([...sweepArgs(single), "--quiet"], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);

    for (let i = 0; i < 3; i++) workers.push(startWorker(redis.url, path.join(dir, `worker${i}.log`)));
    const exits = workers.map((w) => new Promise<NodeJS.Signals | number | null>((res) => w.once("exit", (code, signal) => res(signal ?? code))));
    const multi = path.join(dir, "multi");
    const enqueuer = spawn(process.execPath, [CLI_PATH, ...sweepArgs(multi), "--queue", redis.url, "--enqueue"], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    enqueuer.stdout!.on("data", (d) => (stdout += d));
    enqueuer.stderr!.on("data", (d) => (stderr += d));
    const enqueued = new Promise<number | null>((res) => enqueuer.once("exit", (code) => res(code)));

    // Kill worker 0 while it holds a unit (the queue says which worker processes each active job).
    // It is frozen first (SIGSTOP) and killed only if the job is still its own and still active, so
    // that it cannot finish the unit between the look and the kill.
    const victim = workers[0]!;
    const doneUnits = () => (fs.existsSync(path.join(multi, "parts")) ? fs.readdirSync(path.join(multi, "parts")).filter((f) => f.endsWith(".json")).length : 0);
    const deadline = Date.now() + 90_000;
    while (doneUnits() < 4 && Date.now() < deadline) await sleep(5);
    let held: string | undefined;
    while (!held && Date.now() < deadline) {
      const mine = (await queue.getActive()).find((j) => j.processedBy?.endsWith(`:${victim.pid}`));
      if (mine?.id) {
        victim.kill("SIGSTOP");
        const again = await queue.getJob(mine.id);
        if (again && (await again.getState()) === "active" && again.processedBy === mine.processedBy) held = mine.id;
        else victim.kill("SIGCONT");
      } else await sleep(5);
    }
    assert.ok(held, "worker 0 took a unit");
    // A worker writes its unit's part just before it tells the queue the unit is done: frozen in
    // between, it holds a unit whose results already exist (seen once in a full test run).
    const heldPart = path.join(multi, "parts", `${held!.split("-").slice(-2).join("-")}.json`);
    const heldPartWritten = fs.existsSync(heldPart);
    victim.kill("SIGKILL");
    assert.equal(await exits[0], "SIGKILL");
    const partsAtKill = doneUnits();
    assert.ok(partsAtKill >= 4 && partsAtKill < 24, `killed mid-run (${partsAtKill} of 24 units done)`);

    // Redis restarted once, mid-run: the queue comes back from its append-only file.
    await redis.restart();
    const partsAtRestart = doneUnits();
    t.diagnostic(`worker 0 killed holding ${held} with ${partsAtKill} of 24 units done; Redis back with ${partsAtRestart} done`);

    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([enqueued, new Promise<"timeout">((res) => (timer = setTimeout(() => res("timeout"), 150_000)))]);
    clearTimeout(timer);
    assert.equal(code, 0, `enqueuer: ${code}\n${stderr}`);
    assert.match(stdout, /layer\s+kl\s+ce\s+top1/);
    assert.match(stderr, /sweep: 24\/24 units \(100%\)/);

    // The same summary and the same rows as the single-process run.
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(multi, "summary.json"), "utf8")), JSON.parse(fs.readFileSync(path.join(single, "summary.json"), "utf8")));
    const all = "SELECT * FROM rows ORDER BY prompt, lens, kind, position, label, layer";
    const a = await querySweep(single, all);
    const b = await querySweep(multi, all);
    assert.ok(a.rows.length > 1000);
    assert.equal(b.rows.length, a.rows.length, "none lost, none doubled");
    assert.deepEqual(b.rows, a.rows);
    const dup = await querySweep(multi, "SELECT count(*) FROM (SELECT prompt, kind, position, label, layer, lens, count(*) AS n FROM rows GROUP BY ALL HAVING n > 1)");
    assert.equal(Number(dup.rows[0]![0]), 0);
    // The unit worker 0 held was finished by another worker.
    const unit = held!.split("-").slice(-2).join("-");
    assert.ok(fs.existsSync(path.join(multi, "parts", `${unit}.json`)), unit);
    const logs = [1, 2].map((i) => fs.readFileSync(path.join(dir, `worker${i}.log`), "utf8")).join("");
    if (heldPartWritten) t.diagnostic(`worker 0 had written ${unit}'s results before it was frozen: nothing to redo`);
    else assert.match(logs, new RegExp(`${unit} \\(`), `${unit} redone by worker 1 or 2`);
    for (const f of ["figure.png", "report.html"]) assert.ok(fs.statSync(path.join(multi, f)).size > 1000, f);

    // `sweep merge` alone gives the same summary; an unfinished folder is refused in one line.
    const m = await runCli(["sweep", "merge", "--out", multi, "--json"], { timeoutMs: 60_000 });
    assert.equal(m.code, 0, m.stderr);
    assert.deepEqual(JSON.parse(m.stdout), JSON.parse(fs.readFileSync(path.join(single, "summary.json"), "utf8")));
    fs.rmSync(path.join(multi, "parts", "unit-000007.json"));
    const partial = await runCli(["sweep", "merge", "--out", multi], { timeoutMs: 60_000 });
    assert.equal(partial.code, 2);
    assert.match(partial.stderr, /^logit-lens: 1 of 24 units .* have no results yet \(first: unit-000007\)/);
  } finally {
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill("SIGTERM");
    await Promise.all(workers.map((w) => (w.exitCode === null && w.signalCode === null ? new Promise((r) => w.once("exit", r)) : null)));
    await queue.close();
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("queue errors are one line: unreachable Redis, --queue without --enqueue", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ll-queue-"));
  try {
    const r = await runCli([...sweepArgs(path.join(dir, "x")), "--queue", "redis://127.0.0.1:1", "--enqueue"], { timeoutMs: 60_000 });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^logit-lens: cannot reach Redis at redis:\/\/127\.0\.0\.1:1 [^\n]*\n$/);
    const w = await runCli([...sweepArgs(path.join(dir, "y")), "--queue", "redis://127.0.0.1:1"], { timeoutMs: 30_000 });
    assert.equal(w.code, 2);
    assert.match(w.stderr, /add --enqueue/);
    const bad = await runCli(["sweep", "worker", "--queue", "http://x"], { timeoutMs: 30_000 });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /must be a redis:\/\/ URL/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a unit that fails on bad input stops the enqueuer with the worker's one-line reason; queueing again retries it", { skip: noRedis, timeout: 120_000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ll-queue-"));
  const redis = await RedisServer.start(path.join(dir, "redis"));
  const worker = startWorker(redis.url, path.join(dir, "worker.log"), ["--queue-name", "bad-input"]);
  try {
    const jsonl = path.join(dir, "prompts.jsonl");
    const long = "the cat sat on the mat ".repeat(60);
    fs.writeFileSync(jsonl, [{ text: "The cat sat on the" }, { text: long, id: "too-long" }, { text: "A dog and a" }].map((l) => JSON.stringify(l)).join("\n") + "\n");
    const args = ["sweep", "--model", TINY, "--data", jsonl, "--unit-size", "1", "--out", path.join(dir, "out"), "--queue", redis.url, "--enqueue", "--queue-name", "bad-input"];
    const r = await runCli(args, { timeoutMs: 90_000 });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /logit-lens: 1 unit\(s\) failed in the queue; first: [0-9a-f]+-unit-000001: prompt too-long is \d+ tokens, longer than the model's context of 128\n$/);
    // The other units were computed; a rerun queues the failed one again (and it fails again).
    assert.ok(fs.existsSync(path.join(dir, "out", "parts", "unit-000000.json")));
    assert.ok(fs.existsSync(path.join(dir, "out", "parts", "unit-000002.json")));
    const again = await runCli(args, { timeoutMs: 90_000 });
    assert.equal(again.code, 2);
    assert.match(again.stderr, /unit-000001: prompt too-long/);
    assert.equal((fs.readFileSync(path.join(dir, "worker.log"), "utf8").match(/unit-000001 failed/g) ?? []).length, 2);
  } finally {
    worker.kill("SIGTERM");
    await new Promise((res) => (worker.exitCode !== null ? res(null) : worker.once("exit", res)));
    await redis.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * "Why the fish" through the explorer's server (POST /api/attribute, POST /api/patch) with the real
 * SmolLM2-135M: the answer is the CLI's `attribute --json` / `patch --json` for the same inputs, a
 * malformed request is a 400 with one line, a bad value inside a job is an `error` event after which
 * the server still answers, and a patching sweep is cancelled between its steps, not run to its end.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { CreatedServer } from "../../src/server/server.js";
import { runCli } from "../helpers/run-cli.js";
import { ndjsonEvents } from "../../src/web/ndjson.js";
import { startTestServer } from "../helpers/serve.js";

const MODEL = "smollm2-135m-instruct";
const FISH = "Fish emoji: 🐠, horse emoji:";

interface Ev {
  type: string;
  [k: string]: unknown;
}

let server: CreatedServer;
let base: string;

/** POSTs a body to a route and reads its NDJSON stream; `onEvent` sees each event as it comes. */
async function post(route: string, body: unknown, options: { headers?: Record<string, string>; onEvent?: (e: Ev) => void } = {}): Promise<{ status: number; events: Ev[]; error?: string }> {
  const res = await fetch(`${base}${route}`, { method: "POST", headers: { "content-type": "application/json", ...options.headers }, body: typeof body === "string" ? body : JSON.stringify(body) });
  if (res.status !== 200) return { status: res.status, events: [], error: ((await res.json()) as { error: string }).error };
  const events: Ev[] = [];
  for await (const e of ndjsonEvents<Ev>(res.body!)) {
    events.push(e);
    options.onEvent?.(e);
  }
  return { status: 200, events };
}

before(async () => {
  ({ server, base } = await startTestServer(MODEL));
});

after(async () => {
  await server?.app.close();
});

describe("serve: why the fish", () => {
  test("POST /api/attribute answers the CLI's attribute --json (target, logit difference, position)", { timeout: 600_000 }, async () => {
    const cases: [Record<string, unknown>, string[]][] = [
      // 🐴 vs 🐠 share their leading byte tokens: read where they part, as the CLI does.
      [{ prompt: FISH, target: " 🐴", versus: " 🐠" }, ["--prompt", FISH, "--target", " 🐴", "--versus", " 🐠"]],
      [{ prompt: "The capital of France is", target: " Paris", position: -1, chat: true }, ["--prompt", "The capital of France is", "--target", " Paris", "--position", "-1", "--chat"]],
    ];
    for (const [body, args] of cases) {
      const { status, events } = await post("/api/attribute", body);
      assert.equal(status, 200);
      assert.deepEqual(events.slice(0, 1).map((e) => e.type), ["queued"]);
      const last = events.at(-1)!;
      assert.equal(last.type, "attribution", JSON.stringify(last).slice(0, 300));
      const cli = await runCli(["attribute", ...args, "--model", MODEL, "--json", "--quiet"], { timeoutMs: 180_000 });
      assert.equal(cli.code, 0, cli.stderr);
      assert.deepEqual(last["result"], JSON.parse(cli.stdout));
      // What a reader checks: the parts add up to the model's own logit (difference).
      const r = last["result"] as { logit: number; model_logit: number; parts: unknown[]; heads: number[][] };
      assert.ok(Math.abs(r.logit - r.model_logit) < 1e-3, `${r.logit} vs ${r.model_logit}`);
      assert.equal(r.heads.length, 30);
    }
  });

  test("POST /api/patch answers the CLI's patch --json", { timeout: 600_000 }, async () => {
    const body = { from: "The capital of France is", prompt: "The capital of Italy is", target: " Paris", versus: " Rome", layers: "0,10,20,30", positions: "2-4" };
    const { events } = await post("/api/patch", body);
    const last = events.at(-1)!;
    assert.equal(last.type, "patching", JSON.stringify(last).slice(0, 300));
    const cli = await runCli(["patch", "--from", body.from, "--prompt", body.prompt, "--target", body.target, "--versus", body.versus, "--layers", body.layers, "--positions", body.positions, "--model", MODEL, "--json", "--quiet"], { timeoutMs: 180_000 });
    assert.equal(cli.code, 0, cli.stderr);
    assert.deepEqual(last["result"], JSON.parse(cli.stdout));
    const s = last["result"] as { patched: number[][]; clean: number; corrupted: number; layers: number[]; positions: number[] };
    assert.deepEqual(s.layers, [0, 10, 20, 30]);
    assert.deepEqual(s.positions, [2, 3, 4]);
    // Patching the final residual at the last position gives A's own value (clean).
    assert.ok(Math.abs(s.patched[3]![2]! - s.clean) < 1e-3, `${s.patched[3]![2]} vs ${s.clean}`);
    assert.ok(s.clean > s.corrupted, "France's prompt prefers Paris over Rome more than Italy's does");
  });

  const refusals: [string, string, unknown, number, RegExp][] = [
    ["malformed JSON", "/api/attribute", "{bad", 400, /not valid JSON/],
    ["no target", "/api/attribute", { prompt: "x" }, 400, /target/],
    ["position not an integer", "/api/attribute", { prompt: "x", target: " y", position: "last" }, 400, /position must be integer/],
    ["unknown field", "/api/attribute", { prompt: "x", target: " y", layer: 3 }, 400, /additional properties/],
    ["patch without prompt A", "/api/patch", { prompt: "x", target: " y" }, 400, /from/],
    ["layers not a string", "/api/patch", { prompt: "x", from: "y", target: " y", layers: [1, 2] }, 400, /layers must be string/],
    ["oversized body", "/api/patch", { prompt: "x", from: "y".repeat(70_000), target: " y" }, 413, /too large/],
  ];
  for (const [name, route, body, status, message] of refusals) {
    test(`refused: ${name}`, async () => {
      const r = await post(route, body);
      assert.equal(r.status, status);
      assert.match(r.error!, message);
      assert.ok(!r.error!.includes("\n") && r.error!.length <= 300);
    });
  }

  test("refused: a cross-site Origin", async () => {
    const r = await post("/api/attribute", { prompt: "x", target: " y" }, { headers: { Origin: "http://evil.example" } });
    assert.equal(r.status, 403);
  });

  test("a bad value inside a job is one 'error' event, and the next job runs", { timeout: 300_000 }, async () => {
    const bad: [string, unknown, RegExp][] = [
      ["/api/attribute", { prompt: FISH, target: " 🐴", position: 99 }, /position 99 is out of range/],
      ["/api/attribute", { prompt: FISH, target: " 🐴", versus: " 🐴" }, /do not part/],
      ["/api/patch", { prompt: "The capital of Italy is", from: "The capital of France is", target: " Paris", layers: "0-99" }, /out of range/],
      ["/api/patch", { prompt: "The capital of Italy is", from: "Fish emoji: 🐠, horse emoji:", target: " Paris" }, /different lengths/],
      ["/api/patch", { prompt: "The capital of Italy is", from: "The capital of France is", target: " Paris", positions: "a-b" }, /positions/],
    ];
    for (const [route, body, message] of bad) {
      const { status, events } = await post(route, body);
      assert.equal(status, 200);
      const last = events.at(-1)!;
      assert.equal(last.type, "error", JSON.stringify(last).slice(0, 200));
      assert.match(last["error"] as string, message);
    }
    const ok = await post("/api/attribute", { prompt: FISH, target: " 🐴" });
    assert.equal(ok.events.at(-1)!.type, "attribution");
  });

  test("a patching sweep is cancelled between its steps (POST /api/jobs/:id/cancel)", { timeout: 300_000 }, async () => {
    // 31 layers x ~40 positions: over a thousand runs of the rest of the model, minutes on this CPU.
    const long = "One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve, thirteen, fourteen,";
    let id: string | undefined;
    let cancelledAt = 0;
    const pending = post("/api/patch", { prompt: long, from: long.replace(" four,", " nine,"), target: " fifteen" }, {
      onEvent: (e) => {
        if (e.type === "queued") id = e["job"] as string;
        if (e.type === "status" && e["stage"] === "running") {
          // Let the sweep start, then cancel it.
          setTimeout(() => {
            cancelledAt = Date.now();
            void fetch(`${base}/api/jobs/${id}/cancel`, { method: "POST" });
          }, 1500);
        }
      },
    });
    const { events } = await pending;
    const waited = Date.now() - cancelledAt;
    assert.equal(events.at(-1)!.type, "cancelled", JSON.stringify(events.at(-1)).slice(0, 200));
    assert.ok(cancelledAt > 0 && waited < 15_000, `the job ended ${waited} ms after the cancel`);
    assert.equal(server.queue.size, 0);
    const ok = await post("/api/attribute", { prompt: FISH, target: " 🐴" });
    assert.equal(ok.events.at(-1)!.type, "attribution", "the server answers after the cancel");
  });
});

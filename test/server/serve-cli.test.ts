/**
 * `logit-lens serve` from the command line: prints its URL, answers on 127.0.0.1, refuses a
 * foreign Host; bound to another address it prints a token and refuses requests without it.
 * (No model is loaded: these requests never run a job.)
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { createServer } from "../../src/server/server.js";
import { CLI_PATH } from "../helpers/run-cli.js";

test("serve prints its URL and answers on 127.0.0.1; a foreign Host gets 403", async () => {
  const child = spawn(process.execPath, [CLI_PATH, "serve", "--port", "0", "--quiet"], { stdio: ["ignore", "pipe", "pipe"] });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (d) => {
        out += d;
        const m = /logit-lens explorer: (http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.on("exit", (code) => reject(new Error(`serve exited with ${code}`)));
      setTimeout(() => reject(new Error(`no URL printed: ${out}`)), 30_000);
    });
    const page = await fetch(url);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<script src="\/app.js">/);
    assert.equal((await fetch(`${url}app.js`)).status, 200);
    const status = (await (await fetch(`${url}api/status`)).json()) as { queued: number };
    assert.equal(status.queued, 0);
    const { default: http } = await import("node:http");
    const port = Number(new URL(url).port);
    const code = await new Promise<number>((resolve) => http.get({ host: "127.0.0.1", port, path: "/", headers: { Host: "rebound.example" } }, (res) => resolve(res.statusCode!)));
    assert.equal(code, 403);
  } finally {
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGINT");
    await exited;
  }
});

test("bound to another address, every request needs the printed token", async () => {
  const { app, token } = await createServer({ host: "0.0.0.0", port: 7860, load: () => Promise.reject(new Error("no model in this test")) });
  assert.ok(token && token.length >= 20);
  const without = await app.inject({ method: "GET", url: "/api/status", headers: { host: "192.168.1.5:7860" } });
  assert.equal(without.statusCode, 401);
  assert.match(JSON.parse(without.body).error, /token/);
  const wrong = await app.inject({ method: "GET", url: "/api/status", headers: { host: "192.168.1.5:7860", authorization: "Bearer nope" } });
  assert.equal(wrong.statusCode, 401);
  const bearer = await app.inject({ method: "GET", url: "/api/status", headers: { host: "192.168.1.5:7860", authorization: `Bearer ${token}` } });
  assert.equal(bearer.statusCode, 200);
  // The page's URL carries it once; the cookie carries it after.
  const first = await app.inject({ method: "GET", url: `/?token=${token}`, headers: { host: "192.168.1.5:7860" } });
  assert.equal(first.statusCode, 200);
  const cookie = String(first.headers["set-cookie"]).split(";")[0]!;
  const next = await app.inject({ method: "GET", url: "/api/status", headers: { host: "192.168.1.5:7860", cookie } });
  assert.equal(next.statusCode, 200);
  const crossSite = await app.inject({ method: "GET", url: "/api/status", headers: { host: "192.168.1.5:7860", cookie, origin: "http://evil.example" } });
  assert.equal(crossSite.statusCode, 403);
  await app.close();
});

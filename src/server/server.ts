/**
 * `logit-lens serve`: the explorer's HTTP server (Fastify). API in docs/serve-api.md.
 *
 * A page on any website can send requests to localhost, so nothing here trusts the network:
 * - bound to 127.0.0.1 by default; requests whose Host is not this server's own name (DNS
 *   rebinding) or whose Origin is another site (cross-site requests) get 403;
 * - bound to any other address, every request needs the random token printed at start (as
 *   `?token=`, which the page turns into a same-site cookie, or an `Authorization: Bearer` header);
 * - bodies, prompts and lists are bounded by the routes' JSON schemas; malformed requests get a 4xx
 *   with a one-line JSON error `{"error": "..."}` and never disturb a running job;
 * - one job runs at a time, a bounded queue waits behind it, and a job whose client goes away is
 *   cancelled.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { DEFAULT_MODEL, listAliases } from "../sources/resolve.js";
import { listCache } from "../sources/cache-admin.js";
import { compactReport } from "../outputs/compact.js";
import { toCsv } from "../outputs/csv.js";
import { toHtml } from "../outputs/html.js";
import { toPng } from "../outputs/png.js";
import { toSvg } from "../outputs/svg.js";
import { JobQueue, type AttributeRequest, type JobEvent, type JobRequest, type KlRequest, type ModelLoader, type PatchRequest } from "./jobs.js";

export interface ServeOptions {
  host?: string;
  port?: number;
  /** Default model for requests that name none. */
  model?: string;
  load: ModelLoader;
  /** Jobs that may wait behind the running one (default 16). */
  maxQueued?: number;
  /** Token required when bound to a non-loopback address (default: random). */
  token?: string;
  log?: boolean;
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"]);
const BODY_LIMIT = 64 * 1024;
const MAX_PROMPT_CHARS = 16_000;

const text = (maxLength: number) => ({ type: "string", maxLength });
const LENS_SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["prompt"],
  properties: {
    model: text(4096),
    prompt: text(MAX_PROMPT_CHARS),
    chat: { type: "boolean" },
    messages: {
      type: "array",
      maxItems: 64,
      items: { type: "object", additionalProperties: false, required: ["role", "content"], properties: { role: { type: "string", enum: ["system", "user", "assistant"] }, content: text(MAX_PROMPT_CHARS) } },
    },
    points: { type: "array", maxItems: 6, minItems: 1, items: { type: "string", enum: ["embed", "resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"] } },
    variant: { type: "string", enum: ["logit", "raw"] },
    topK: { type: "integer", minimum: 1, maximum: 100 },
    positions: text(1000),
    track: { type: "array", maxItems: 16, items: { type: "string", minLength: 1, maxLength: 200 } },
    trackFamily: { type: "array", maxItems: 8, items: { type: "string", minLength: 1, maxLength: 200 } },
    generate: {
      type: "object",
      additionalProperties: false,
      properties: {
        maxNewTokens: { type: "integer", minimum: 1, maximum: 512 },
        temperature: { type: "number", minimum: 0, maximum: 10 },
        topP: { type: "number", exclusiveMinimum: 0, maximum: 1 },
        seed: { type: "integer", minimum: 0, maximum: 2 ** 31 - 1 },
      },
    },
  },
} as const;

// One side of an exact-KL comparison: the lens fields that shape the cells (no targets, top-k or
// generation: the KL is over whole distributions of the prompt's positions).
const KL_SIDE_FIELDS = ["model", "prompt", "chat", "messages", "points", "variant", "positions"] as const;
const KL_SIDE = {
  type: "object",
  additionalProperties: false,
  required: ["prompt"],
  properties: Object.fromEntries(KL_SIDE_FIELDS.map((k) => [k, LENS_SCHEMA.properties[k]])),
};
const KL_SCHEMA = { type: "object", additionalProperties: false, required: ["a", "b"], properties: { a: KL_SIDE, b: KL_SIDE } } as const;

// "Why the fish" (issue 10): `logit-lens attribute` and `logit-lens patch` options, by their CLI names.
const TARGET = { type: "string", minLength: 1, maxLength: 200 } as const;
const ATTRIBUTE_SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["prompt", "target"],
  properties: {
    model: LENS_SCHEMA.properties.model,
    prompt: LENS_SCHEMA.properties.prompt,
    chat: LENS_SCHEMA.properties.chat,
    target: TARGET,
    versus: TARGET,
    position: { type: "integer", minimum: -100_000, maximum: 100_000 },
  },
} as const;
const PATCH_SCHEMA = {
  type: "object",
  additionalProperties: false,
  required: ["prompt", "from", "target"],
  properties: {
    model: LENS_SCHEMA.properties.model,
    prompt: LENS_SCHEMA.properties.prompt,
    from: LENS_SCHEMA.properties.prompt,
    chat: LENS_SCHEMA.properties.chat,
    target: TARGET,
    versus: TARGET,
    layers: text(1000),
    positions: text(1000),
    map: text(1000),
  },
} as const;

const EXPORT_TYPES: Record<string, { type: string; ext: string }> = {
  json: { type: "application/json; charset=utf-8", ext: "json" },
  compact: { type: "application/json; charset=utf-8", ext: "compact.json" },
  html: { type: "text/html; charset=utf-8", ext: "html" },
  svg: { type: "image/svg+xml", ext: "svg" },
  png: { type: "image/png", ext: "png" },
  csv: { type: "text/csv; charset=utf-8", ext: "csv" },
};

/** The app's files (built by `npm run build` into dist/web/), read once. */
function appAssets(): { js: string; css: string } {
  const dirs = [new URL("../../web/", import.meta.url), new URL("../../dist/web/", import.meta.url)];
  for (const dir of dirs) {
    const js = new URL("app.js", dir);
    const css = new URL("app.css", dir);
    if (fs.existsSync(js) && fs.existsSync(css)) return { js: fs.readFileSync(js, "utf8"), css: fs.readFileSync(css, "utf8") };
  }
  throw new Error(`the web app is not built (looked in ${dirs.map((d) => fileURLToPath(d)).join(", ")}): run npm run build`);
}

const APP_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>logit lens · explorer</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/app.css">
</head>
<body>
<div id="lens-explorer"></div>
<script src="/app.js"></script>
</body>
</html>
`;

export interface CreatedServer {
  app: FastifyInstance;
  queue: JobQueue;
  /** Needed by every request when bound to a non-loopback address. */
  token: string | undefined;
  /** The port the Host check expects (set by startServer once listening). */
  setPort(port: number): void;
}

export async function createServer(options: ServeOptions): Promise<CreatedServer> {
  const host = options.host ?? "127.0.0.1";
  const loopback = LOOPBACK.has(host);
  const token = loopback ? undefined : (options.token ?? crypto.randomBytes(18).toString("base64url"));
  const queue = new JobQueue(options.load, options.model ?? DEFAULT_MODEL, { maxQueued: options.maxQueued ?? 16, keepReports: 16 });
  const app = Fastify({
    bodyLimit: BODY_LIMIT,
    logger: options.log ? { level: "info" } : false,
    // Ajv: no type coercion (a number where a string belongs is an error, not converted) and every
    // error message bounded.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    return503OnClosing: true,
    routerOptions: { maxParamLength: 100 },
  });
  let port = options.port ?? 7860;

  const fail = (reply: FastifyReply, code: number, message: string) => reply.code(code).type("application/json; charset=utf-8").send({ error: message });

  // Every request: Host (DNS rebinding), Origin (cross-site), token (non-loopback binds).
  app.addHook("onRequest", async (req, reply) => {
    const hostHeader = (req.headers.host ?? "").toLowerCase();
    if (loopback) {
      const allowed = [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`];
      if (!allowed.includes(hostHeader)) return fail(reply, 403, `refused: Host '${hostHeader.slice(0, 100)}' is not this server (${allowed[0]})`);
      const origin = req.headers.origin;
      if (origin !== undefined && !allowed.some((h) => origin === `http://${h}`)) return fail(reply, 403, "refused: cross-origin request");
    } else {
      const origin = req.headers.origin;
      if (origin !== undefined && origin !== `http://${hostHeader}`) return fail(reply, 403, "refused: cross-origin request");
      const given = tokenOf(req);
      if (!given || !safeEqual(given, token!)) return fail(reply, 401, "this server needs the token it printed at start: open the URL it printed");
    }
    reply.header("X-Content-Type-Options", "nosniff");
    reply.header("Referrer-Policy", "no-referrer");
    reply.header("Cache-Control", "no-store");
  });

  app.setErrorHandler((err: Error & { statusCode?: number; validation?: unknown }, _req, reply) => {
    const code = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
    const msg = (err.validation ? `invalid request: ${err.message}` : err.message).split("\n")[0]!.slice(0, 300);
    return fail(reply, code, code === 500 ? `internal error: ${msg}` : msg);
  });
  app.setNotFoundHandler((req, reply) => fail(reply, 404, `no such route: ${req.method} ${req.url.split("?")[0]!.slice(0, 100)}`));

  app.get("/", async (req, reply) => {
    const q = req.query as Record<string, string>;
    // The token in the URL becomes a same-site cookie, so the page's own requests carry it.
    if (token && q["token"]) reply.header("Set-Cookie", `ll_token=${token}; HttpOnly; SameSite=Strict; Path=/`);
    reply.header("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'");
    return reply.type("text/html; charset=utf-8").send(APP_HTML);
  });
  app.get("/app.js", async (_req, reply) => reply.type("text/javascript; charset=utf-8").send(appAssets().js));
  app.get("/app.css", async (_req, reply) => reply.type("text/css; charset=utf-8").send(appAssets().css));

  app.get("/api/models", async () => {
    const aliases = await listAliases();
    let cached: { model: string; bytes: number }[] = [];
    try {
      cached = listCache()
        .compiled.filter((c) => c.state === "ok" && c.model)
        .map((c) => ({ model: c.model!, bytes: c.bytes }));
    } catch {
      // An unreadable cache lists nothing.
    }
    return {
      default: queue.defaultModel,
      loaded: queue.currentModel ?? null,
      aliases: aliases.map((a) => ({ alias: a.alias, description: a.description, architecture: a.architecture, size: a.size, cached: a.cached })),
      cached: [...new Map(cached.map((c) => [c.model, c])).values()],
    };
  });

  app.get("/api/status", async () => ({ queued: queue.size, model: queue.currentModel ?? null }));

  /** Runs a queued job as a stream: one JSON object per line (NDJSON), written as the job goes. */
  const streamJob = async (reply: FastifyReply, submit: (send: (e: JobEvent) => void) => ReturnType<JobQueue["submit"]>) => {
    const res = reply.raw;
    let closed = false;
    const send = (e: JobEvent) => {
      if (closed) return;
      res.write(`${JSON.stringify(e)}\n`);
    };
    if (queue.full) return fail(reply, 503, queue.fullMessage());
    reply.hijack();
    res.writeHead(200, {
      "Content-Type": "application/x-ndjson; charset=utf-8",
      "Cache-Control": "no-store",
      "X-Content-Type-Options": "nosniff",
    });
    const handle = submit(send);
    // The client went away before the end: cancel its job (queued or running).
    res.on("close", () => {
      if (!res.writableEnded) {
        closed = true;
        handle.cancel();
      }
    });
    await handle.done;
    if (!closed) res.end();
  };

  app.post("/api/lens", { schema: { body: LENS_SCHEMA } }, async (req, reply) => streamJob(reply, (send) => queue.submit(req.body as JobRequest, send)));

  app.post("/api/kl", { schema: { body: KL_SCHEMA } }, async (req, reply) => streamJob(reply, (send) => queue.submitKl(req.body as KlRequest, send)));

  app.post("/api/attribute", { schema: { body: ATTRIBUTE_SCHEMA } }, async (req, reply) => streamJob(reply, (send) => queue.submitAttribute(req.body as AttributeRequest, send)));

  app.post("/api/patch", { schema: { body: PATCH_SCHEMA } }, async (req, reply) => streamJob(reply, (send) => queue.submitPatch(req.body as PatchRequest, send)));

  app.post("/api/jobs/:id/cancel", { schema: { params: { type: "object", properties: { id: { type: "string", pattern: "^j[0-9]{1,12}$" } } } } }, async (req, reply) => {
    const { id } = req.params as { id: string };
    if (!queue.cancel(id)) return fail(reply, 404, `no running or queued job ${id}`);
    return { cancelled: id };
  });

  app.get(
    "/api/jobs/:id/export",
    {
      schema: {
        params: { type: "object", properties: { id: { type: "string", pattern: "^j[0-9]{1,12}$" } } },
        querystring: { type: "object", additionalProperties: false, properties: { format: { type: "string", enum: Object.keys(EXPORT_TYPES) }, token: { type: "string", maxLength: 100 } } },
      },
    },
    async (req, reply) => {
      const { id } = req.params as { id: string };
      const format = (req.query as { format?: string }).format ?? "json";
      const report = queue.reports.get(id);
      if (!report) return fail(reply, 404, `no finished report for job ${id} (the server keeps the last 16)`);
      const kind = EXPORT_TYPES[format]!;
      const body =
        format === "json" ? JSON.stringify(report, null, 2) :
        format === "compact" ? JSON.stringify(compactReport(report)) :
        format === "html" ? toHtml(report) :
        format === "svg" ? toSvg(report) :
        format === "csv" ? toCsv(report) :
        Buffer.from(await toPng(report));
      reply.header("Content-Disposition", `attachment; filename="logit-lens-${id}.${kind.ext}"`);
      return reply.type(kind.type).send(body);
    },
  );

  return { app, queue, token, setPort: (p: number) => void (port = p) };
}

/** Starts the server and resolves to its URL (with the token when one is needed). */
export async function startServer(options: ServeOptions): Promise<{ url: string; app: FastifyInstance; queue: JobQueue }> {
  const created = await createServer(options);
  const host = options.host ?? "127.0.0.1";
  created.setPort(options.port ?? 7860);
  await created.app.listen({ host, port: options.port ?? 7860 });
  const address = created.app.server.address();
  const port = typeof address === "object" && address ? address.port : (options.port ?? 7860);
  created.setPort(port);
  const shown = host.includes(":") ? `[${host}]` : host === "0.0.0.0" ? "127.0.0.1" : host;
  const url = `http://${shown}:${port}/${created.token ? `?token=${created.token}` : ""}`;
  return { url, app: created.app, queue: created.queue };
}

function tokenOf(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith("Bearer ")) return auth.slice(7);
  const q = (req.query as Record<string, unknown> | undefined)?.["token"];
  if (typeof q === "string") return q;
  const cookie = req.headers.cookie?.split(/;\s*/).find((c) => c.startsWith("ll_token="));
  return cookie?.slice("ll_token=".length);
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

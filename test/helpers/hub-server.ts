/**
 * A loopback imitation of the Hugging Face hub, just the part that model downloads touch:
 *
 *   GET /api/models/<org>/<name>/revision/<rev>    model info; `sha` is the commit the revision is at
 *   GET /api/models/<org>/<name>/tree/<rev>[/<dir>]?recursive=&expand=
 *                                                  file list, paginated with a `Link: <...>; rel="next"` header
 *   GET|HEAD /<org>/<name>/resolve/<rev>/<path>    file bytes; LFS files answer 302 to /cdn/<sha256>, as the
 *                                                  real hub redirects to its CDN; Range requests get 206 with
 *                                                  Content-Range; ETag, X-Repo-Commit, X-Linked-Etag,
 *                                                  X-Linked-Size headers like the real ones
 *   GET /cdn/<sha256>                              LFS bytes (Range as above)
 *
 * Errors as the hub gives them: 404 with X-Error-Code RepoNotFound / RevisionNotFound /
 * EntryNotFound; 401 (GatedRepo) for a gated repo without the right bearer token.
 * Every request is recorded (path, Range, Authorization, status, body bytes sent); a file can be
 * set to drop the connection part way through its first N transfers.
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface RepoFixture {
  /** "org/name" */
  id: string;
  /** File path -> contents. */
  files: Record<string, Buffer | string>;
  /** Files served as LFS (default: *.safetensors, *.gguf, *.bin and anything over 1 MiB). */
  isLfs?: (path: string, size: number) => boolean;
  /** When set, requests need `Authorization: Bearer <token>`. */
  token?: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  range: string | undefined;
  authorization: string | undefined;
  status: number;
  /** Body bytes written before the response ended (or the connection was dropped). */
  bytesSent: number;
}

export interface HubServer {
  url: string;
  requests: RecordedRequest[];
  /** The commit id each repo's "main" points at. */
  commitOf(repoId: string): string;
  /** Drop the connection after `afterBytes` body bytes of `path`, for the next `times` transfers of it. */
  dropConnection(path: string, afterBytes: number, times?: number): void;
  close(): Promise<void>;
}

interface StoredFile {
  path: string;
  data: Buffer;
  gitOid: string;
  lfs?: { oid: string; size: number; pointerSize: number };
}

interface StoredRepo {
  id: string;
  commit: string;
  token: string | undefined;
  files: Map<string, StoredFile>;
}

const defaultIsLfs = (path: string, size: number): boolean =>
  /\.(safetensors|gguf|bin)$/.test(path) || size > 1 << 20;

function gitBlobSha1(data: Buffer): string {
  return createHash("sha1").update(`blob ${data.length}\0`).update(data).digest("hex");
}

export interface HubServerOptions {
  treePageSize?: number;
  /**
   * Hostile-server scenarios: called first for every request (with the decoded path); when it
   * returns true it has answered (or deliberately not answered) the request itself.
   */
  intercept?: (req: IncomingMessage, res: ServerResponse, path: string) => boolean;
}

export async function startHubServer(fixtures: RepoFixture[], options: HubServerOptions = {}): Promise<HubServer> {
  const pageSize = options.treePageSize ?? 3;
  const repos = new Map<string, StoredRepo>();
  const blobsBySha = new Map<string, StoredFile>();
  for (const fx of fixtures) {
    const files = new Map<string, StoredFile>();
    for (const [path, content] of Object.entries(fx.files)) {
      const data = Buffer.isBuffer(content) ? content : Buffer.from(content, "utf8");
      const lfs = (fx.isLfs ?? defaultIsLfs)(path, data.length);
      const file: StoredFile = { path, data, gitOid: gitBlobSha1(data) };
      if (lfs) {
        const sha = createHash("sha256").update(data).digest("hex");
        file.lfs = { oid: sha, size: data.length, pointerSize: 134 };
        // In git an LFS file is a pointer; its blob id is that of the pointer text.
        file.gitOid = gitBlobSha1(Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha}\nsize ${data.length}\n`));
        blobsBySha.set(sha, file);
      }
      files.set(path, file);
    }
    repos.set(fx.id, { id: fx.id, commit: randomBytes(20).toString("hex"), token: fx.token, files });
  }

  const requests: RecordedRequest[] = [];
  const drops = new Map<string, { afterBytes: number; times: number }>();
  let baseUrl = "";

  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", ...headers });
    res.end(text);
  };
  const fail = (res: ServerResponse, status: number, code: string, message: string): void =>
    json(res, status, { error: message }, { "X-Error-Code": code, "X-Error-Message": message });

  /** Finds the repo and checks access; answers the error itself and returns undefined when it fails. */
  const access = (req: IncomingMessage, res: ServerResponse, repoId: string): StoredRepo | undefined => {
    const repo = repos.get(repoId);
    if (!repo) {
      fail(res, 404, "RepoNotFound", "Repository not found");
      return undefined;
    }
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) {
      fail(res, 401, "GatedRepo", `Access to model ${repoId} is restricted. You must be authenticated to access it.`);
      return undefined;
    }
    return repo;
  };

  const commitFor = (res: ServerResponse, repo: StoredRepo, rev: string): string | undefined => {
    if (rev === "main" || rev === "HEAD" || rev === repo.commit) return repo.commit;
    fail(res, 404, "RevisionNotFound", `Invalid rev id: ${rev}`);
    return undefined;
  };

  const sendBytes = (req: IncomingMessage, res: ServerResponse, file: StoredFile, record: RecordedRequest, headers: Record<string, string>): void => {
    const size = file.data.length;
    let start = 0;
    let end = size - 1;
    let status = 200;
    const range = req.headers.range;
    if (range) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      if (m) {
        start = Number(m[1]);
        if (m[2]) end = Math.min(Number(m[2]), size - 1);
        if (start >= size) {
          record.status = 416;
          res.writeHead(416, { "Content-Range": `bytes */${size}` });
          res.end();
          return;
        }
        status = 206;
      }
    }
    const body = file.data.subarray(start, end + 1);
    record.status = status;
    res.writeHead(status, {
      "Content-Type": "application/octet-stream",
      "Content-Length": String(body.length),
      "Accept-Ranges": "bytes",
      ...(status === 206 ? { "Content-Range": `bytes ${start}-${end}/${size}` } : {}),
      ...headers,
    });
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    const drop = drops.get(file.path);
    if (drop && drop.times > 0 && body.length > drop.afterBytes) {
      drop.times--;
      const part = body.subarray(0, drop.afterBytes);
      record.bytesSent = part.length;
      // Let the bytes reach the socket, then cut the connection mid-body.
      res.write(part, () => setTimeout(() => req.socket.destroy(), 20));
      return;
    }
    record.bytesSent = body.length;
    res.end(body);
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const path = decodeURIComponent(url.pathname);
    const record: RecordedRequest = {
      method: req.method ?? "GET",
      path: url.pathname + url.search,
      range: req.headers.range,
      authorization: req.headers.authorization,
      status: 0,
      bytesSent: 0,
    };
    requests.push(record);
    res.on("finish", () => {
      if (!record.status) record.status = res.statusCode;
    });
    res.on("close", () => {
      if (!record.status) record.status = res.statusCode;
    });
    if (options.intercept?.(req, res, path)) return;

    let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(path);
    if (m) {
      const repo = access(req, res, m[1]!);
      if (!repo) return;
      const commit = commitFor(res, repo, m[2]!);
      if (!commit) return;
      return json(res, 200, {
        _id: createHash("md5").update(repo.id).digest("hex").slice(0, 24),
        id: repo.id,
        modelId: repo.id,
        sha: commit,
        private: false,
        gated: repo.token ? "manual" : false,
        downloads: 0,
        likes: 0,
        lastModified: "2025-01-01T00:00:00.000Z",
        pipeline_tag: "text-generation",
        siblings: [...repo.files.keys()].map((rfilename) => ({ rfilename })),
      });
    }

    m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/.exec(path);
    if (m) {
      const repo = access(req, res, m[1]!);
      if (!repo) return;
      const commit = commitFor(res, repo, m[2]!);
      if (!commit) return;
      const prefix = m[3] ? `${m[3].replace(/\/$/, "")}/` : "";
      const recursive = url.searchParams.get("recursive") === "true";
      const entries: unknown[] = [];
      const dirs = new Set<string>();
      for (const file of [...repo.files.values()].sort((a, b) => a.path.localeCompare(b.path))) {
        if (!file.path.startsWith(prefix)) continue;
        const rest = file.path.slice(prefix.length);
        const slash = rest.indexOf("/");
        if (slash >= 0) {
          const dir = prefix + rest.slice(0, slash);
          if (!dirs.has(dir)) {
            dirs.add(dir);
            entries.push({ type: "directory", oid: createHash("sha1").update(dir).digest("hex"), size: 0, path: dir });
          }
          if (!recursive) continue;
        }
        entries.push({
          type: "file",
          oid: file.gitOid,
          size: file.data.length,
          path: file.path,
          ...(file.lfs ? { lfs: file.lfs } : {}),
        });
      }
      const cursor = Number(url.searchParams.get("cursor") ?? "0");
      const page = entries.slice(cursor, cursor + pageSize);
      const headers: Record<string, string> = {};
      if (cursor + pageSize < entries.length) {
        const next = new URL(url.pathname, baseUrl);
        url.searchParams.forEach((v, k) => next.searchParams.set(k, v));
        next.searchParams.set("cursor", String(cursor + pageSize));
        headers["Link"] = `<${next.href}>; rel="next"`;
      }
      return json(res, 200, page, headers);
    }

    m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    if (m) {
      const repo = access(req, res, m[1]!);
      if (!repo) return;
      const commit = commitFor(res, repo, m[2]!);
      if (!commit) return;
      const file = repo.files.get(m[3]!);
      if (!file) return fail(res, 404, "EntryNotFound", `${m[3]} does not exist on "${m[2]}"`);
      const headers: Record<string, string> = { "X-Repo-Commit": commit, ETag: `"${file.gitOid}"` };
      if (file.lfs) {
        headers["X-Linked-Etag"] = `"${file.lfs.oid}"`;
        headers["X-Linked-Size"] = String(file.lfs.size);
        headers["Location"] = `${baseUrl}/cdn/${file.lfs.oid}`;
        record.status = 302;
        res.writeHead(302, headers);
        res.end();
        return;
      }
      return sendBytes(req, res, file, record, headers);
    }

    m = /^\/cdn\/([0-9a-f]{64})$/.exec(path);
    if (m) {
      const file = blobsBySha.get(m[1]!);
      if (!file) return fail(res, 404, "EntryNotFound", "no such object");
      return sendBytes(req, res, file, record, { ETag: `"${file.lfs!.oid}"` });
    }

    fail(res, 404, "RepoNotFound", "Not found");
  };

  const server: Server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  baseUrl = `http://127.0.0.1:${port}`;

  return {
    url: baseUrl,
    requests,
    commitOf(repoId) {
      const repo = repos.get(repoId);
      if (!repo) throw new Error(`no fixture repo ${repoId}`);
      return repo.commit;
    },
    dropConnection(path, afterBytes, times = 1) {
      drops.set(path, { afterBytes, times });
    },
    close() {
      return new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}

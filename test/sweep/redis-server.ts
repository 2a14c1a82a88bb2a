/**
 * A real redis-server (Debian's package, `.ci/run` installs it) for the queue test and the sweep
 * scaling benchmark: on a free port, in its own folder, with the append-only file on (every write
 * fsynced) so that a restart keeps the queue's jobs. Not a module of the product: the product only
 * ever connects to a Redis the user runs.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

/** The redis-server on PATH, or null. */
export function redisServerPath(): string | null {
  const r = spawnSync("sh", ["-c", "command -v redis-server"], { encoding: "utf8" });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => s.write("PING\r\n"));
    s.once("data", (d) => (s.destroy(), resolve(d.toString().startsWith("+PONG"))));
    s.once("error", () => resolve(false));
  });
}

export class RedisServer {
  private child: ChildProcess | null = null;
  readonly url: string;

  constructor(
    readonly port: number,
    readonly dir: string,
  ) {
    this.url = `redis://127.0.0.1:${port}`;
    fs.mkdirSync(dir, { recursive: true });
  }

  static async start(dir: string): Promise<RedisServer> {
    const r = new RedisServer(await freePort(), dir);
    await r.start();
    return r;
  }

  /** Starts redis-server and waits until it answers PING (it loads its append-only file first). */
  async start(): Promise<void> {
    const log = fs.openSync(path.join(this.dir, "redis.log"), "a");
    this.child = spawn("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir, "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes"], { stdio: ["ignore", log, log] });
    fs.closeSync(log);
    const deadline = Date.now() + 15_000;
    while (!(await answers(this.port))) {
      if (this.child.exitCode !== null) throw new Error(`redis-server exited with ${this.child.exitCode}; see ${path.join(this.dir, "redis.log")}`);
      if (Date.now() > deadline) throw new Error(`redis-server on port ${this.port} did not answer in 15 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** SIGTERM: Redis flushes its append-only file and exits. */
  async stop(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once("exit", r));
    c.kill("SIGTERM");
    await exited;
    this.child = null;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

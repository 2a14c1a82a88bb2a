/**
 * Progress on stderr for long work (downloads, conversions, model loads). Silent when `quiet` is
 * set; redraws one line on a TTY and prints occasional plain lines otherwise, so CI logs stay short.
 */
export interface Progress {
  /** Starts a task; `total` in units (bytes, tensors...) or undefined when unknown. */
  start(label: string, total?: number, unit?: "bytes" | "items"): void;
  /** Reports the amount done so far in the current task. */
  update(done: number): void;
  /** Ends the current task, printing a final line. */
  done(note?: string): void;
  /** A one-off informational line. */
  info(message: string): void;
}

export function createProgress(options: { quiet?: boolean; stream?: NodeJS.WriteStream } = {}): Progress {
  const stream = options.stream ?? process.stderr;
  if (options.quiet) {
    return { start() {}, update() {}, done() {}, info() {} };
  }
  const tty = Boolean(stream.isTTY);
  let label = "";
  let total: number | undefined;
  let unit: "bytes" | "items" = "items";
  let started = 0;
  let lastDraw = 0;
  let lastPlainPercent = -1;

  const format = (n: number): string =>
    unit === "bytes" ? `${(n / 1048576).toFixed(1)} MiB` : String(n);

  const line = (done: number): string => {
    const elapsed = (Date.now() - started) / 1000;
    const pct = total ? ` ${((100 * done) / total).toFixed(0)}%` : "";
    const of = total ? ` / ${format(total)}` : "";
    return `${label}:${pct} ${format(done)}${of} (${elapsed.toFixed(1)} s)`;
  };

  return {
    start(newLabel, newTotal, newUnit = "items") {
      label = newLabel;
      total = newTotal;
      unit = newUnit;
      started = Date.now();
      lastDraw = 0;
      lastPlainPercent = -1;
      if (!tty) stream.write(`${label}...\n`);
    },
    update(done) {
      const now = Date.now();
      if (tty) {
        if (now - lastDraw < 100) return;
        lastDraw = now;
        stream.write(`\r\x1b[K${line(done)}`);
      } else if (total) {
        // Plain logs: one line per 25 %, no carriage returns.
        const quarter = Math.floor((4 * done) / total) * 25;
        if (quarter > lastPlainPercent && quarter < 100) {
          lastPlainPercent = quarter;
          if (quarter > 0) stream.write(`${line(done)}\n`);
        }
      }
    },
    done(note) {
      const elapsed = ((Date.now() - started) / 1000).toFixed(1);
      const msg = `${label}: done in ${elapsed} s${note ? `, ${note}` : ""}`;
      stream.write(tty ? `\r\x1b[K${msg}\n` : `${msg}\n`);
    },
    info(message) {
      stream.write(`${message}\n`);
    },
  };
}

/**
 * A one-line status for long loops (sweeps, training): redrawn in place on a terminal; elsewhere
 * (logs, CI) printed at most every 10 s, and always when `final`. null when quiet.
 */
export function statusLine(quiet: boolean | undefined): ((line: string, final: boolean) => void) | null {
  if (quiet) return null;
  const tty = Boolean(process.stderr.isTTY);
  let last = 0;
  return (line, final) => {
    if (tty) process.stderr.write(`\r\x1b[K${line}${final ? "\n" : ""}`);
    else if (final || Date.now() - last > 10_000) {
      last = Date.now();
      process.stderr.write(`${line}\n`);
    }
  };
}

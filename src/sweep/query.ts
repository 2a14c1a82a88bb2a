/**
 * `logit-lens query <results/> "<SQL>"`: SQL over a sweep's rows with an embedded DuckDB
 * (@duckdb/node-api; its prebuilt library ships inside an npm package). Views:
 *   rows     every unit's Parquet rows (parts/unit-*.parquet)
 *   summary  the summary series, one row per (lens, metric, layer): mean, lo, hi
 */
import fs from "node:fs";
import path from "node:path";
import { UserError } from "../errors.js";

export interface QueryResult {
  columns: string[];
  rows: unknown[][];
}

const sqlString = (s: string) => `'${s.replace(/'/g, "''")}'`;

export async function querySweep(dir: string, sql: string): Promise<QueryResult> {
  const parts = path.join(dir, "parts");
  if (!fs.existsSync(parts) || !fs.readdirSync(parts).some((f) => f.endsWith(".parquet"))) {
    throw new UserError(`${dir} holds no sweep rows (parts/*.parquet); run 'logit-lens sweep --out ${dir}' first`);
  }
  const { DuckDBInstance } = await import("@duckdb/node-api");
  const db = await DuckDBInstance.create(":memory:");
  const c = await db.connect();
  try {
    await c.run(`CREATE VIEW rows AS SELECT * FROM read_parquet(${sqlString(path.join(parts, "unit-*.parquet"))})`);
    const summaryFile = path.join(dir, "summary.json");
    if (fs.existsSync(summaryFile)) {
      await c.run(
        `CREATE VIEW summary AS SELECT s.lens, s.metric, l.layer - 1 AS layer, s.mean[l.layer] AS mean, s.lo[l.layer] AS lo, s.hi[l.layer] AS hi, s.prompts, s."values" ` +
          `FROM (SELECT unnest(series, max_depth := 2) FROM read_json(${sqlString(summaryFile)})) s, range(1, len(s.mean) + 1) l(layer)`,
      );
    }
    let reader;
    try {
      reader = await c.runAndReadAll(sql);
    } catch (e) {
      throw new UserError(`query failed: ${String((e as Error).message).split("\n")[0]}`);
    }
    const columns = reader.columnNames();
    const rows = reader.getRowsJson() as unknown[][];
    return { columns, rows };
  } finally {
    c.closeSync();
    db.closeSync();
  }
}

/** A query result as an aligned text table. */
export function formatTable(r: QueryResult): string {
  const cell = (v: unknown) => (v === null || v === undefined ? "NULL" : typeof v === "number" ? (Number.isInteger(v) ? String(v) : Number(v.toPrecision(6)).toString()) : typeof v === "object" ? JSON.stringify(v) : String(v));
  const body = r.rows.map((row) => row.map(cell));
  const widths = r.columns.map((c, i) => Math.max(c.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(r.columns), line(widths.map((w) => "-".repeat(w))), ...body.map(line), `(${r.rows.length} row${r.rows.length === 1 ? "" : "s"})`].join("\n");
}

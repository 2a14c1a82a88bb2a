/**
 * Opening model files for reading, with the one-line error a user can act on.
 */
import fs from "node:fs";
import { UserError } from "../errors.js";

/** Opens `file` read-only; `kind` names it in the error ("GGUF file", "safetensors file"). */
export function openForReading(file: string, absolute: string, kind: string): number {
  try {
    return fs.openSync(absolute, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`${file}: cannot open ${kind} (${code === "ENOENT" ? "no such file" : code ?? String(e)})`);
  }
}

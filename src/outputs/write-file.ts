/**
 * Writes a whole file or nothing: a temporary file in the same folder, then a rename, so an
 * existing output is never left half-written (a crash or a full disk leaves the old file intact).
 */
import fs from "node:fs";
import path from "node:path";
import { UserError } from "../errors.js";

export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const target = path.resolve(file);
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new UserError(`cannot write ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/**
 * Opening model files for reading, with the one-line error a user can act on.
 */
import fs from "node:fs";
import { isAbsolute } from "node:path";
import { UserError } from "../errors.js";
import type { TensorRef } from "./tensor-ref.js";

/** Opens `file` read-only; `kind` names it in the error ("GGUF file", "safetensors file"). */
export function openForReading(file: string, absolute: string, kind: string): number {
  try {
    return fs.openSync(absolute, "r");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`${file}: cannot open ${kind} (${code === "ENOENT" ? "no such file" : code ?? String(e)})`);
  }
}

/**
 * True for a path that stays inside the folder it is joined to: relative, '/'-separated, with no
 * '..', '.' or empty segment, no backslash, drive letter or control character. Every file name
 * that comes from a server or from a model file passes this before it touches the file system.
 */
export function isSafeRelativePath(path: unknown): path is string {
  return (
    typeof path === "string" &&
    path.length > 0 &&
    path.length <= 1024 &&
    !isAbsolute(path) &&
    !path.startsWith("/") &&
    !/[\\\u0000-\u001f\u007f]/.test(path) &&
    !/^[A-Za-z]:/.test(path) &&
    path.split("/").every((p) => p !== ".." && p !== "." && p !== "")
  );
}

/** Raw bytes of a tensor, as stored in its file. */
export function readTensorBytes(ref: TensorRef): Uint8Array {
  const out = new Uint8Array(ref.byteLength);
  const fd = fs.openSync(ref.file, "r");
  try {
    let done = 0;
    while (done < out.length) {
      const n = fs.readSync(fd, out, done, out.length - done, ref.offset + done);
      if (n === 0) throw new UserError(`${ref.file}: file ends inside tensor ${ref.name} (truncated file?)`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

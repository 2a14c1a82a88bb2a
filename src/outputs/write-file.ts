/**
 * Writes an output file (`--out`) without ever destroying what was at the target path:
 *
 * - a regular file (or a new path) is written whole to a temporary file in the same folder, then
 *   renamed over the target, so a crash or a full disk leaves the old file intact;
 * - a symbolic link is followed: the link stays, and the file it points at is replaced as above;
 * - a character device or a FIFO (`/dev/stdout`, `/dev/null`, a named pipe) is written through:
 *   renaming over it would replace the device node itself (as root, the system's one);
 * - anything else (a folder, a block device, a socket, a dangling link) is refused with one line.
 */
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { UserError } from "../errors.js";

function describeCode(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOSPC" || code === "EDQUOT") return "no space left on the device (free some space or write elsewhere)";
  if (code === "EACCES" || code === "EPERM") return "permission denied";
  if (code === "EROFS") return "the file system is read-only";
  if (code === "ENOENT" || code === "ENOTDIR") return "its folder does not exist";
  if (code === "EISDIR") return "it is a folder";
  return code ?? (e as Error).message;
}

/** What is at `target` once symbolic links are followed; undefined when nothing is there. */
function statTarget(file: string, target: string): { real: string; stat: fs.Stats | undefined } {
  let lst: fs.Stats;
  try {
    lst = fs.lstatSync(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { real: target, stat: undefined };
    throw new UserError(`cannot write ${file}: ${describeCode(e)}`);
  }
  if (!lst.isSymbolicLink()) return { real: target, stat: lst };
  let real: string;
  try {
    real = fs.realpathSync(target);
  } catch {
    throw new UserError(`cannot write ${file}: it is a symbolic link to a file that does not exist (${fs.readlinkSync(target)}); remove the link or point it at a file`);
  }
  return { real, stat: fs.statSync(real) };
}

export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const { real, stat } = statTarget(file, path.resolve(file));
  if (stat && !stat.isFile()) {
    if (stat.isCharacterDevice() || stat.isFIFO()) {
      // Write through: the device or pipe receives the bytes and stays what it is.
      try {
        fs.writeFileSync(real, data);
      } catch (e) {
        throw new UserError(`cannot write ${file}: ${describeCode(e)}`);
      }
      return;
    }
    const what = stat.isDirectory() ? "a folder" : stat.isBlockDevice() ? "a block device" : stat.isSocket() ? "a socket" : "not a regular file";
    throw new UserError(`cannot write ${file}: it is ${what}; give a file path`);
  }
  const tmp = path.join(path.dirname(real), `.${path.basename(real)}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`);
  try {
    // "wx": never follow or reuse something already at the temporary name.
    fs.writeFileSync(tmp, data, { flag: "wx", mode: stat ? stat.mode & 0o777 : 0o666 });
    fs.renameSync(tmp, real);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new UserError(`cannot write ${file}: ${describeCode(e)}`);
  }
}

/**
 * Errors a user can act on. The CLI prints `message` as one line and exits non-zero; anything
 * that is not a UserError is a bug and is reported as such (still one line unless LOGIT_LENS_DEBUG
 * is set, in which case the stack is printed too).
 */
export class UserError extends Error {
  constructor(message: string) {
    // Always one line, whatever file-derived text (a tensor name, a JSON parser's excerpt of a
    // corrupt header) the message quotes: line breaks become spaces, other control bytes escapes.
    // A crafted file can make a quoted name megabytes long: the line is capped too.
    const line = message
      .replace(/\s*[\r\n\u2028\u2029]+\s*/g, " ")
      .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
    super(line.length > 2000 ? `${line.slice(0, 1000)} ... ${line.slice(-500)}` : line);
    this.name = "UserError";
  }
}

/** Throws a UserError when `condition` is false: for validating untrusted file contents. */
export function check(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new UserError(typeof message === "string" ? message : message());
}

/**
 * A failing system call that the user's environment caused (a full disk, a read-only or
 * unwritable cache, too many open files) as a one-line UserError saying what to do; undefined for
 * anything else, which stays an internal error.
 */
export function environmentError(e: unknown): UserError | undefined {
  const err = e as NodeJS.ErrnoException | undefined;
  if (!err || typeof err !== "object" || typeof err.code !== "string" || typeof err.syscall !== "string") return undefined;
  const where = err.path ? ` (${err.path})` : "";
  const cacheHint = "set LOGIT_LENS_CACHE to a writable folder with room";
  switch (err.code) {
    case "ENOSPC":
    case "EDQUOT":
      return new UserError(`no space left on the device${where}: free some space, or ${cacheHint}`);
    case "EROFS":
      return new UserError(`cannot write${where}: the file system is read-only; ${cacheHint}`);
    case "EACCES":
    case "EPERM":
      return new UserError(`permission denied${where}: ${cacheHint}, or fix the folder's permissions`);
    case "ENOTDIR":
      return new UserError(`a path that should be a folder is a file${where}: check LOGIT_LENS_CACHE and the paths given`);
    case "EMFILE":
    case "ENFILE":
      return new UserError(`too many open files${where}: raise the limit (ulimit -n) and run again`);
    case "EIO":
      return new UserError(`input/output error${where}: the disk or network file system failed; check it and run again`);
    default:
      return undefined;
  }
}

/** Whether `e` says a folder cannot be written at all (as opposed to a full disk): worth a fallback cache. */
export function isUnwritable(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === "EROFS" || code === "EACCES" || code === "EPERM" || code === "ENOTDIR";
}

/**
 * Errors a user can act on. The CLI prints `message` as one line and exits non-zero; anything
 * that is not a UserError is a bug and is reported as such (still one line unless LOGIT_LENS_DEBUG
 * is set, in which case the stack is printed too).
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UserError";
  }
}

/** Throws a UserError when `condition` is false: for validating untrusted file contents. */
export function check(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new UserError(typeof message === "string" ? message : message());
}

/** Shared assertion: a promise must reject with a UserError whose message is one line matching `pattern`. */
import assert from "node:assert/strict";
import { UserError } from "../../src/errors.js";

export async function rejectsOneLine(promise: Promise<unknown>, pattern: RegExp): Promise<UserError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof UserError, `expected a UserError, got ${String(err)}`);
    assert.ok(!err.message.includes("\n"), `message is not one line: ${err.message}`);
    assert.match(err.message, pattern);
    return err;
  }
  assert.fail("expected a rejection");
}

/**
 * The server's job streams are NDJSON: one JSON event per line (docs/serve-api.md). This reads one
 * to its end, an event at a time, for the app, the why-fish panel, the server tests and the
 * explorer bench. Leaving the loop early cancels the stream.
 */
export async function* ndjsonEvents<T>(body: ReadableStream<Uint8Array>): AsyncGenerator<T, void, undefined> {
  // (the cast: DOM and Node type the decoder's input as BufferSource, the body as Uint8Array)
  const reader = body.pipeThrough(new TextDecoderStream() as unknown as ReadableWritablePair<string, Uint8Array>).getReader();
  let buf = "";
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) yield JSON.parse(line) as T;
      }
    }
    finished = true;
  } finally {
    if (!finished) await reader.cancel().catch(() => undefined);
  }
}

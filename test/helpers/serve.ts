/**
 * The explorer's server for tests: `logit-lens serve` on the real model `model`, on a free port of
 * 127.0.0.1, as the CLI starts it (fetched first, so that the first job does not time out).
 */
import { loadModel } from "../../src/index.js";
import { createServer, type CreatedServer } from "../../src/server/server.js";
import { realSource, type RealAlias } from "./real-models.js";

export async function startTestServer(model: RealAlias): Promise<{ server: CreatedServer; base: string }> {
  await realSource(model);
  const server = await createServer({ port: 0, model, load: (spec) => loadModel(spec) });
  await server.app.listen({ host: "127.0.0.1", port: 0 });
  const port = (server.app.server.address() as { port: number }).port;
  server.setPort(port);
  return { server, base: `http://127.0.0.1:${port}` };
}

/** (d) @azure/web-pubsub-express, the peer package, on a plain Express app at its best. */
import { createServer, type RequestListener } from 'node:http';
import { WebPubSubEventHandler } from '@azure/web-pubsub-express';
import { ExpressAdapter } from '@nestjs/platform-express';
import { listening, type RunningServer } from './servers.js';
import { HUB, UPSTREAM_PATH, connectReply } from './workloads.js';

type ExpressApp = RequestListener & {
  set(setting: string, value: unknown): void;
  use(handler: unknown): void;
};

export function startAzureExpress(): Promise<RunningServer> {
  const handler = new WebPubSubEventHandler(HUB, {
    path: UPSTREAM_PATH,
    handleConnect: (request, response) => response.success(connectReply(request.queries)),
    handleUserEvent: (request, response) =>
      response.success(request.data as string, request.dataType),
  });
  // The adapter's own Express app, used without Nest (express ships no types of its own).
  const app = new ExpressAdapter().getInstance<ExpressApp>();
  app.set('etag', false);
  app.use(handler.getMiddleware());
  return listening(createServer(app));
}

import type { IncomingMessage } from 'node:http';
import {
  Controller,
  Inject,
  Options,
  Post,
  Req,
  Res,
  UseGuards,
  VERSION_NEUTRAL,
  type Type,
} from '@nestjs/common';
import { bodyErrorReply, getRawBody } from './web-pubsub.middleware.js';
import { WEB_PUBSUB_CONFIG } from './web-pubsub.constants.js';
import { WebPubSubDispatcher, writeReply, type AnyResponse } from './web-pubsub.dispatcher.js';
import { WebPubSubGuard } from './web-pubsub.guard.js';
import type { WebPubSubConfig } from './web-pubsub.options.js';

/** Nest's route path metadata key (`PATH_METADATA`), the same string in every version. */
const NEST_PATH_METADATA = 'path';

/**
 * The path and every sub-path (URL templates such as `/eventhandler/{hub}/{event}`), in the
 * wildcard syntax of the adapter: Express 5 wants a named wildcard, Fastify a bare `*`.
 */
function routesFor(path: string, adapter: string | undefined): string[] {
  const base = path === '/' ? '' : path;
  return [path, adapter === 'fastify' ? `${base}/*` : `${base}/*rest`];
}

/** Called once the adapter is known, before Nest registers the routes. */
export function useAdapterRoutes(controller: Type<unknown>, path: string, adapter: string): void {
  const routes = routesFor(path, adapter);
  for (const method of ['validate', 'handle']) {
    Reflect.defineMetadata(NEST_PATH_METADATA, routes, controller.prototype[method]);
  }
}

/**
 * Creates the upstream controller for one `forRoot()` call, with its own path. Each call makes
 * its own class, so its route metadata belongs to that module instance alone.
 */
export function createWebPubSubController(
  path: string,
  decorators: readonly ClassDecorator[],
): Type<unknown> {
  const routes = routesFor(path, 'express');

  // Version-neutral: URI versioning with a default version must not move the upstream URL.
  @Controller({ version: VERSION_NEUTRAL })
  @UseGuards(WebPubSubGuard)
  class WebPubSubController {
    constructor(
      @Inject(WebPubSubDispatcher) private readonly dispatcher: WebPubSubDispatcher,
      @Inject(WEB_PUBSUB_CONFIG) private readonly config: WebPubSubConfig,
    ) {}

    @Options(routes)
    validate(@Req() req: IncomingMessage, @Res() res: AnyResponse): void {
      writeReply(res, this.dispatcher.validate(req.headers));
    }

    @Post(routes)
    handle(@Req() req: IncomingMessage, @Res() res: AnyResponse): Promise<void> {
      const answer = (body: Buffer) =>
        this.dispatcher.dispatch(req.headers, body).then((reply) => writeReply(res, reply));
      const refuse = (err: unknown) => writeReply(res, bodyErrorReply(err));
      // The body is normally read already: no extra promise hop for it on the hot path.
      try {
        const body = getRawBody(req, this.config.maxBodySize);
        return Buffer.isBuffer(body) ? answer(body) : body.then(answer, refuse);
      } catch (err) {
        refuse(err);
        return Promise.resolve();
      }
    }
  }

  for (const decorate of decorators) decorate(WebPubSubController);
  return WebPubSubController;
}

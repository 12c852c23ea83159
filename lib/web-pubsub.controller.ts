import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  BadRequestException,
  Controller,
  Inject,
  Options,
  PayloadTooLargeException,
  Post,
  Req,
  Res,
  UseGuards,
  type Type,
} from '@nestjs/common';
import { BodyTooLargeError, getRawBody } from './web-pubsub.body.js';
import { WEB_PUBSUB_CONFIG } from './web-pubsub.constants.js';
import { Messages } from './web-pubsub.errors.js';
import { WebPubSubDispatcher, errorReply, type UpstreamReply } from './web-pubsub.dispatcher.js';
import { WebPubSubGuard } from './web-pubsub.guard.js';
import type { WebPubSubConfig } from './web-pubsub.options.js';

/** Express hands us a `ServerResponse`; Fastify a reply wrapping one (`raw`). */
type AnyResponse = ServerResponse | { raw: ServerResponse; hijack(): void };

/**
 * Written straight to the socket: the status, content type and headers are the protocol's, and
 * no global interceptor or serializer of the app may rewrite them.
 */
function send(res: AnyResponse, reply: UpstreamReply): void {
  let raw: ServerResponse;
  if ('raw' in res) {
    res.hijack();
    raw = res.raw;
  } else raw = res;
  raw.writeHead(reply.status, reply.headers);
  raw.end(reply.body);
}

/**
 * Creates the upstream controller for one `forRoot()` call, with its own path: the path itself
 * and every sub-path (URL templates such as `/eventhandler/{hub}/{event}`).
 */
export function createWebPubSubController(
  path: string,
  decorators: readonly ClassDecorator[],
): Type<unknown> {
  const routes = [path, `${path === '/' ? '' : path}/*rest`];

  @Controller()
  @UseGuards(WebPubSubGuard)
  class WebPubSubController {
    constructor(
      @Inject(WebPubSubDispatcher) private readonly dispatcher: WebPubSubDispatcher,
      @Inject(WEB_PUBSUB_CONFIG) private readonly config: WebPubSubConfig,
    ) {}

    @Options(routes)
    validate(@Req() req: IncomingMessage, @Res() res: AnyResponse): void {
      send(res, this.dispatcher.validate(req.headers));
    }

    @Post(routes)
    async handle(@Req() req: IncomingMessage, @Res() res: AnyResponse): Promise<void> {
      let body: Buffer;
      try {
        body = await getRawBody(req, this.config.maxBodySize);
      } catch (err) {
        const reply = errorReply(
          err instanceof BodyTooLargeError
            ? new PayloadTooLargeException(err.message)
            : new BadRequestException(Messages.bodyAborted),
        );
        reply.headers.connection = 'close';
        return send(res, reply);
      }
      send(res, await this.dispatcher.dispatch(req.headers, body));
    }
  }

  for (const decorate of decorators) decorate(WebPubSubController);
  return WebPubSubController;
}

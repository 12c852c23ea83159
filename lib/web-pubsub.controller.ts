import type { IncomingMessage } from 'node:http';
import { Controller, Inject, Options, Post, Req, Res, UseGuards, type Type } from '@nestjs/common';
import { bodyErrorReply, getRawBody } from './web-pubsub.middleware.js';
import { WEB_PUBSUB_CONFIG } from './web-pubsub.constants.js';
import { WebPubSubDispatcher, writeReply, type AnyResponse } from './web-pubsub.dispatcher.js';
import { WebPubSubGuard } from './web-pubsub.guard.js';
import type { WebPubSubConfig } from './web-pubsub.options.js';

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
      writeReply(res, this.dispatcher.validate(req.headers));
    }

    @Post(routes)
    async handle(@Req() req: IncomingMessage, @Res() res: AnyResponse): Promise<void> {
      let body: Buffer;
      try {
        body = await getRawBody(req, this.config.maxBodySize);
      } catch (err) {
        return writeReply(res, bodyErrorReply(err));
      }
      writeReply(res, await this.dispatcher.dispatch(req.headers, body));
    }
  }

  for (const decorate of decorators) decorate(WebPubSubController);
  return WebPubSubController;
}

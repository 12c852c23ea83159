import type { IncomingMessage, ServerResponse } from 'node:http';
import { Inject, Injectable, Logger, type OnModuleDestroy } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { Subscription } from 'rxjs';
import { WEB_PUBSUB_CONFIG, WEB_PUBSUB_PATH } from './web-pubsub.constants.js';
import { Messages } from './web-pubsub.errors.js';
import type { WebPubSubConfig } from './web-pubsub.options.js';

/** Where the raw body of an upstream request is kept on the request object. */
const RAW_BODY = Symbol('web-pubsub:raw-body');

type RequestWithBody = IncomingMessage & {
  [RAW_BODY]?: Buffer;
  body?: unknown;
  rawBody?: Buffer;
};

export class BodyTooLargeError extends Error {
  override name = 'BodyTooLargeError';
}

/** Reads a request stream into one Buffer, refusing more than `limit` bytes. */
export function readStream(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) return Promise.reject(new BodyTooLargeError(Messages.bodyTooLarge(limit)));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        req.resume(); // discard the rest; the answer closes the connection
        reject(new BodyTooLargeError(Messages.bodyTooLarge(limit)));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onAborted = () => onError(new Error(Messages.bodyAborted));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}

/**
 * The raw bytes of an upstream request. Normally read by the middleware below before any body
 * parser; if something else consumed the stream first, fall back to what it left behind.
 */
export async function getRawBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const request = req as RequestWithBody;
  if (request[RAW_BODY]) return request[RAW_BODY];
  if (!request.complete && request.readable) return readStream(request, limit);
  if (Buffer.isBuffer(request.rawBody)) return request.rawBody;
  const body = request.body;
  if (Buffer.isBuffer(body)) return body;
  if (typeof body === 'string') return Buffer.from(body, 'utf8');
  if (body === undefined) return Buffer.alloc(0);
  return Buffer.from(JSON.stringify(body), 'utf8');
}

/** Writes a JSON error in Nest's usual shape straight to the socket, closing the connection. */
function rejectRequest(res: ServerResponse, status: number, message: string): void {
  const body = JSON.stringify({
    statusCode: status,
    message,
    error: status === 413 ? 'Payload Too Large' : 'Bad Request',
  });
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    connection: 'close',
  });
  res.end(body);
}

/**
 * True when a request path is the upstream path or below it, under any prefix (a global prefix
 * is set after the module starts, so it cannot be known here). Segment boundaries are respected.
 */
export function createPathMatcher(path: string): (url: string) => boolean {
  const wanted = '/' + path.replace(/^\/+|\/+$/g, '').toLowerCase();
  return (url) => {
    const q = url.indexOf('?');
    const pathname = (q === -1 ? url : url.slice(0, q)).toLowerCase();
    let at = pathname.indexOf(wanted);
    while (at !== -1) {
      const next = pathname.charCodeAt(at + wanted.length);
      if (Number.isNaN(next) || next === 47 /* / */) return true;
      at = pathname.indexOf(wanted, at + 1);
    }
    return false;
  };
}

/**
 * Makes upstream bodies reach the handlers intact in an app created with a plain
 * `NestFactory.create()`: Express' default JSON parser is strict (a bare `"hello"` is refused),
 * stops at 100 kb and leaves text and binary unread. `HttpAdapterHost.init$` fires as soon as the
 * adapter exists, before Nest registers its parsers, so this middleware reads the upstream
 * requests first, and body-parser then skips them as already read.
 */
@Injectable()
export class WebPubSubBodyReader implements OnModuleDestroy {
  private readonly logger = new Logger('WebPubSubModule');
  private readonly subscription: Subscription;

  constructor(
    adapterHost: HttpAdapterHost,
    @Inject(WEB_PUBSUB_CONFIG) private readonly config: WebPubSubConfig,
    @Inject(WEB_PUBSUB_PATH) path: string,
  ) {
    const matches = createPathMatcher(path);
    this.subscription = adapterHost.init$.subscribe(() => {
      const adapter = adapterHost.httpAdapter;
      const type = adapter.getType?.();
      if (type !== 'express') {
        this.logger.warn(
          `Reading upstream bodies early is only set up for Express; on "${type}" configure body parsing for ${path} yourself.`,
        );
        return;
      }
      adapter.use((req: RequestWithBody, res: ServerResponse, next: () => void) => {
        if (req.method !== 'POST' || !matches(req.url ?? '')) return next();
        readStream(req, this.config.maxBodySize).then(
          (body) => {
            req[RAW_BODY] = body;
            next();
          },
          (err: Error) =>
            err instanceof BodyTooLargeError
              ? rejectRequest(res, 413, err.message)
              : rejectRequest(res, 400, Messages.bodyAborted),
        );
      });
    });
  }

  onModuleDestroy(): void {
    this.subscription.unsubscribe();
  }
}

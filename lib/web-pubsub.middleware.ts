import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  BadRequestException,
  HttpException,
  Inject,
  InternalServerErrorException,
  Injectable,
  Logger,
  PayloadTooLargeException,
  type OnModuleDestroy,
  type Type,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { Subscription } from 'rxjs';
import {
  WEB_PUBSUB_CONFIG,
  WEB_PUBSUB_CONTROLLER,
  WEB_PUBSUB_PATH,
} from './web-pubsub.constants.js';
import { useAdapterRoutes } from './web-pubsub.controller.js';
import {
  WebPubSubDispatcher,
  errorReply,
  writeReply,
  type AnyResponse,
  type UpstreamReply,
} from './web-pubsub.dispatcher.js';
import { Messages, WebPubSubConfigurationError } from './web-pubsub.errors.js';
import { CeHeaders } from './web-pubsub.protocol.js';
import type { WebPubSubConfig } from './web-pubsub.options.js';

/** Where the raw body of an upstream request is kept on the request object. */
const RAW_BODY = Symbol('web-pubsub:raw-body');
/** Fastify: the content type an upstream request came with, while it wears ours. */
const ORIGINAL_CONTENT_TYPE = Symbol('web-pubsub:content-type');
const UPSTREAM_CONTENT_TYPE = 'application/x-nestjs-web-pubsub-upstream';
/** Fastify: the body limit of the module instance that took the request. */
const BODY_LIMIT = Symbol('web-pubsub:body-limit');

/**
 * On the upstream path, OPTIONS is the abuse-protection probe: answered (400 without
 * `WebHook-Request-Origin`) before CORS, guards or body parsers see it.
 */
const isProbe = (req: { method?: string }) => req.method === 'OPTIONS';

type PathMatcher = (url: string, headers: IncomingMessage['headers']) => boolean;

/** The little of Fastify's API used here, so that Fastify need not be installed. */
interface FastifyLike {
  hasContentTypeParser(type: string): boolean;
  addContentTypeParser(type: string, parser: Function): void;
  addHook(name: string, hook: Function): void;
}
interface FastifyRequestLike {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  raw: { [ORIGINAL_CONTENT_TYPE]?: string | string[] | null; [BODY_LIMIT]?: number };
}

type RequestWithBody = IncomingMessage & {
  [RAW_BODY]?: Buffer;
  body?: unknown;
  rawBody?: Buffer;
};

export class BodyTooLargeError extends Error {
  override name = 'BodyTooLargeError';
}

class BodyAlreadyParsedError extends Error {
  override name = 'BodyAlreadyParsedError';
}

/** 413 for a body over the limit, 500 for one parsed by someone else, 400 for one cut short. */
const bodyException = (err: unknown): HttpException => {
  if (err instanceof BodyTooLargeError) return new PayloadTooLargeException(err.message);
  // A set-up error of the app, not the caller's: say so.
  if (err instanceof BodyAlreadyParsedError) return new InternalServerErrorException(err.message);
  return new BadRequestException(Messages.bodyAborted);
};

/** The answer to a body that could not be taken; the connection is closed. */
export function bodyErrorReply(err: unknown): UpstreamReply {
  return errorReply(bodyException(err), true);
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
 * The raw bytes of an upstream request, read by the hooks below before any body parser. A
 * request whose body another parser already consumed cannot be trusted byte for byte (JSON would
 * come back re-serialized, text without its quotes): that is a set-up error, said loudly.
 */
export function getRawBody(req: IncomingMessage, limit: number): Buffer | Promise<Buffer> {
  const request = req as RequestWithBody;
  if (request[RAW_BODY]) return request[RAW_BODY];
  const body = request.body;
  if (Buffer.isBuffer(body)) return body; // Fastify: our own parser's result
  if (!request.complete && request.readable) return readStream(request, limit);
  if (Buffer.isBuffer(request.rawBody)) return request.rawBody;
  if (body === undefined) return Buffer.alloc(0);
  throw new BodyAlreadyParsedError(Messages.bodyAlreadyParsed);
}

/** Requests that carry Web PubSub headers: the only ones looked for under an unknown prefix. */
const isCloudEvent = (headers: IncomingMessage['headers']) =>
  headers[CeHeaders.requestOrigin] !== undefined ||
  headers[CeHeaders.type] !== undefined ||
  headers[CeHeaders.specVersion] !== undefined ||
  headers[CeHeaders.awpsVersion] !== undefined;

/**
 * Whether a request is for the upstream path or below it. A global prefix is set after the
 * module starts, so it cannot be known here: the path matches at the start of the URL, or, for
 * requests carrying CloudEvents headers, after any prefix (whole segments only). Other routes
 * whose path merely contains the segment are left alone. `/` takes every path.
 */
export function createPathMatcher(path: string): PathMatcher {
  const wanted = '/' + path.replace(/^\/+|\/+$/g, '').toLowerCase();
  if (wanted === '/') return () => true;
  return (url, headers) => {
    // The routers ignore the query and a fragment, so the path ends at the first `?` or `#`.
    const end = url.search(/[?#]/);
    const pathname = (end === -1 ? url : url.slice(0, end)).toLowerCase();
    const atBoundary = (at: number) => {
      const next = pathname.charCodeAt(at + wanted.length);
      return Number.isNaN(next) || next === 47; /* / */
    };
    if (pathname.startsWith(wanted) && atBoundary(0)) return true;
    if (!isCloudEvent(headers)) return false;
    for (let at = pathname.indexOf(wanted, 1); at !== -1; at = pathname.indexOf(wanted, at + 1)) {
      if (atBoundary(at)) return true;
    }
    return false;
  };
}

/**
 * Runs before the app's own middleware, for the upstream path only:
 * - reads event bodies first, so they reach the handlers intact in an app created with a plain
 *   `NestFactory.create()`: Express' default JSON parser is strict (a bare `"hello"` is refused),
 *   stops at 100 kb and leaves text and binary unread. `HttpAdapterHost.init$` fires as soon as
 *   the adapter exists, before Nest registers its parsers, and body-parser then skips these
 *   requests as already read;
 * - answers the abuse-protection probe, which `app.enableCors()` would otherwise take for a CORS
 *   preflight and answer 204 without `WebHook-Allowed-Origin`, failing the validation.
 */
@Injectable()
export class WebPubSubMiddleware implements OnModuleDestroy {
  private readonly logger = new Logger('WebPubSubModule');
  private readonly subscription: Subscription;

  constructor(
    adapterHost: HttpAdapterHost,
    private readonly dispatcher: WebPubSubDispatcher,
    @Inject(WEB_PUBSUB_CONFIG) private readonly config: WebPubSubConfig,
    @Inject(WEB_PUBSUB_PATH) path: string,
    @Inject(WEB_PUBSUB_CONTROLLER) controller: Type<unknown>,
  ) {
    const matches = createPathMatcher(path);
    if (!adapterHost.init$) throw new WebPubSubConfigurationError(Messages.nestTooOld);
    this.subscription = adapterHost.init$.subscribe(() => {
      const adapter = adapterHost.httpAdapter;
      const type = adapter.getType?.();
      useAdapterRoutes(controller, path, type);
      if (type === 'express') this.installOnExpress(adapter, matches);
      else if (type === 'fastify') this.installOnFastify(adapter.getInstance(), matches);
      else {
        this.logger.warn(
          `Upstream bodies are read early on Express and Fastify only; on "${type}", make sure ${path} receives its raw body.`,
        );
      }
    });
  }

  private installOnExpress(adapter: { use(fn: unknown): unknown }, matches: PathMatcher): void {
    adapter.use((req: RequestWithBody, res: ServerResponse, next: () => void) => {
      if (!matches(req.url ?? '', req.headers)) return next();
      if (isProbe(req)) return writeReply(res, this.dispatcher.validate(req.headers));
      if (req.method !== 'POST') return next();
      readStream(req, this.config.maxBodySize).then(
        (body) => {
          req[RAW_BODY] = body;
          next();
        },
        (err: unknown) => writeReply(res, bodyErrorReply(err)),
      );
    });
  }

  /**
   * Fastify refuses content types it has no parser for (415 for `application/octet-stream`)
   * and parses JSON and text itself. Upstream POSTs are relabelled with a private content type
   * whose parser keeps the raw bytes, and get their own back before the handler runs: no parser
   * of the app is added or changed, so its other routes behave as before. The probe is answered
   * here too, before CORS plugins and guards can take it.
   */
  private installOnFastify(fastify: FastifyLike, matches: PathMatcher): void {
    // One parser serves every module instance: Fastify refuses a second one for the same type.
    if (!fastify.hasContentTypeParser(UPSTREAM_CONTENT_TYPE)) {
      fastify.addContentTypeParser(
        UPSTREAM_CONTENT_TYPE,
        (
          req: FastifyRequestLike,
          payload: IncomingMessage,
          done: (err: Error | null, body?: Buffer) => void,
        ) => {
          readStream(payload, req.raw[BODY_LIMIT] ?? this.config.maxBodySize).then(
            (body) => done(null, body),
            (err: unknown) => done(bodyException(err)),
          );
        },
      );
    }
    fastify.addHook(
      'onRequest',
      (req: FastifyRequestLike, reply: AnyResponse, done: () => void) => {
        if (!matches(req.url, req.headers)) return done();
        if (isProbe(req)) return writeReply(reply, this.dispatcher.validate(req.headers));
        // Another module instance may have relabelled it already: keep the first original.
        if (req.method === 'POST' && req.raw[ORIGINAL_CONTENT_TYPE] === undefined) {
          req.raw[ORIGINAL_CONTENT_TYPE] = req.headers['content-type'] ?? null;
          req.raw[BODY_LIMIT] = this.config.maxBodySize;
          req.headers['content-type'] = UPSTREAM_CONTENT_TYPE;
        }
        done();
      },
    );
    fastify.addHook(
      'preValidation',
      (req: FastifyRequestLike, _reply: unknown, done: () => void) => {
        const original = req.raw[ORIGINAL_CONTENT_TYPE];
        if (original === null) delete req.headers['content-type'];
        else if (original !== undefined) req.headers['content-type'] = original;
        done();
      },
    );
  }

  onModuleDestroy(): void {
    this.subscription.unsubscribe();
  }
}

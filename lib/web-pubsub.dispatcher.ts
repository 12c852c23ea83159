import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import {
  BadRequestException,
  GatewayTimeoutException,
  HttpException,
  ServiceUnavailableException,
  type OnModuleDestroy,
  Inject,
  Injectable,
  InternalServerErrorException,
  Logger,
  NotFoundException,
} from '@nestjs/common';
import { WEB_PUBSUB_CONFIG } from './web-pubsub.constants.js';
import { WebPubSubContext } from './web-pubsub.context.js';
import { Messages } from './web-pubsub.errors.js';
import {
  MqttConnectException,
  mqttCodeForVersion,
  mqttCodeToStatus,
  mqttConnectErrorBody,
  statusToMqttCode,
} from './web-pubsub.mqtt.js';
import { WebPubSubExplorer, type EventHandler, type HubHandlers } from './web-pubsub.explorer.js';
import type { WebPubSubConfig } from './web-pubsub.options.js';
import {
  BLOCKING_EVENTS,
  CeHeaders,
  InvalidBodyError,
  JSON_CONTENT_TYPE,
  REQUIRED_EVENT_HEADERS,
  decodeConnectBody,
  decodeConnectionState,
  decodeDisconnectedBody,
  decodeGroupBody,
  decodeHeaderText,
  decodeUserEventBody,
  encodeConnectReply,
  encodeConnectionState,
  encodeUserEventReply,
  parseEventType,
  readMqttUserProperties,
  parseRequestOrigins,
  resolveAllowedOrigin,
  type ConnectRequest,
  type ConnectionStates,
  type EncodedReply,
  type UserEventDataType,
  type WebPubSubEventKind,
} from './web-pubsub.protocol.js';

/**
 * Entries forgotten `windowMs` after they were set. All share one window, so the oldest sit
 * first and pruning stops at the first live one; every access prunes, so memory follows the
 * event rate over one window.
 */
class ExpiringMap<T> {
  private readonly entries = new Map<string, { value: T; expiresAt: number }>();
  constructor(private readonly windowMs: number) {}

  get(key: string): T | undefined {
    this.prune();
    return this.entries.get(key)?.value;
  }

  set(key: string, value: T): void {
    this.prune();
    this.entries.set(key, { value, expiresAt: Date.now() + this.windowMs });
  }

  /** Removes the entry if it still holds this value. */
  delete(key: string, value: T): void {
    if (this.entries.get(key)?.value === value) this.entries.delete(key);
  }

  private prune(): void {
    const now = Date.now();
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt > now) break;
      this.entries.delete(key);
    }
  }
}

/** An answer for the service, independent of the HTTP adapter. */
export interface UpstreamReply {
  status: number;
  headers: Record<string, string | string[]>;
  body?: Buffer;
}

/** Express hands us a `ServerResponse`; Fastify a reply wrapping one (`raw`). */
export type AnyResponse = ServerResponse | { raw: ServerResponse; hijack(): void };

/**
 * Written straight to the socket: the status, content type and headers are the protocol's, and
 * no global interceptor or serializer of the app may rewrite them.
 */
export function writeReply(res: AnyResponse, reply: UpstreamReply): void {
  let raw: ServerResponse;
  if ('raw' in res) {
    res.hijack();
    raw = res.raw;
  } else raw = res;
  raw.writeHead(reply.status, reply.headers);
  raw.end(reply.body);
}

/** Errors are answered the way Nest answers an `HttpException`: `{ statusCode, message, error }`. */
export function errorReply(exception: HttpException, close = false): UpstreamReply {
  const response = exception.getResponse();
  const payload =
    typeof response === 'string'
      ? { statusCode: exception.getStatus(), message: response }
      : response;
  return {
    status: exception.getStatus(),
    headers: { 'content-type': JSON_CONTENT_TYPE, ...(close ? { connection: 'close' } : {}) },
    body: Buffer.from(JSON.stringify(payload), 'utf8'),
  };
}

const header = (headers: IncomingHttpHeaders, name: string): string | undefined => {
  const value = headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
};

const optionalText = (value: string | undefined) =>
  value === undefined ? undefined : decodeHeaderText(value);

/** A thrown non-Error for a log line; even `Object.create(null)` has no `toString` to call. */
function describe(value: unknown): string {
  try {
    return typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

/** One event on its way: settled once, by the handler's answer or by its deadline. */
interface InFlight {
  info: EventInfo;
  /** `performance.now()` at the start when debug logging is on, else 0. */
  started: number;
  expiresAt: number;
  reply: Promise<UpstreamReply>;
  settle(reply: UpstreamReply): void;
  done: boolean;
}

/** A decoded event and the handler it goes to. */
interface HandlerCall {
  handler: EventHandler;
  kind: WebPubSubEventKind;
  data: unknown;
  context: WebPubSubContext;
}

/** Deadlines are checked a tenth of the timeout apart (10 ms to 1 s): precise enough, one timer. */
const sweepPeriod = (timeout: number) => Math.min(1000, Math.max(10, timeout / 10));

/** What the request was about, for the log line and the error messages. */
interface EventInfo {
  hub?: string;
  event?: string;
  connectionId?: string;
  handler?: string;
  /** Set for an MQTT client's connect, whose errors are answered in MQTT's terms. */
  mqttVersion?: number;
}

/**
 * Turns one upstream request into one answer: checks the CloudEvents headers, decodes the body
 * for its event, calls the handler and encodes what it returned (or threw).
 */
@Injectable()
export class WebPubSubDispatcher implements OnModuleDestroy {
  private readonly logger = new Logger('WebPubSubModule');
  private readonly inFlight = new Set<InFlight>();
  private sweeper?: NodeJS.Timeout;
  private readonly deduplicator?: ExpiringMap<Promise<UpstreamReply>>;
  private draining = false;

  constructor(
    private readonly explorer: WebPubSubExplorer,
    @Inject(WEB_PUBSUB_CONFIG) private readonly config: WebPubSubConfig,
  ) {
    if (config.deduplicationWindow > 0) {
      this.deduplicator = new ExpiringMap(config.deduplicationWindow);
    }
  }

  /** The abuse-protection probe (OPTIONS): no signature, only the origin handshake. */
  validate(headers: IncomingHttpHeaders): UpstreamReply {
    const origins = parseRequestOrigins(headers[CeHeaders.requestOrigin]);
    if (origins.length === 0) return errorReply(new BadRequestException(Messages.missingOrigin));
    const allowed = resolveAllowedOrigin(origins, this.config.allowedHosts);
    if (!allowed) return errorReply(new BadRequestException(Messages.originNotAllowed(origins)));
    return { status: 200, headers: { [CeHeaders.allowedOrigin]: allowed } };
  }

  /** An event POST whose signature the guard has already checked. */
  dispatch(headers: IncomingHttpHeaders, body: Buffer): Promise<UpstreamReply> {
    if (this.draining)
      return Promise.resolve(
        errorReply(new ServiceUnavailableException(Messages.shuttingDown), true),
      );
    const key = this.deduplicator && deduplicationKey(headers);
    if (key) {
      const earlier = this.deduplicator!.get(key);
      if (earlier) {
        this.logger.debug(
          `Retried event ${key.replaceAll('\n', ' ')} answered from the first delivery`,
        );
        return earlier;
      }
    }
    const reply = this.start(headers, body);
    if (key) {
      this.deduplicator!.set(key, reply);
      // A failure is what a retry is for: let the next delivery run the handler again.
      void reply.then((answer) => answer.status >= 500 && this.deduplicator!.delete(key, reply));
    }
    return reply;
  }

  /**
   * Lets the requests in flight finish before the app closes; new ones get 503 meanwhile. This is
   * the earliest shutdown hook, before other modules close the clients handlers may be using.
   * Each request ends by its deadline at the latest.
   */
  async onModuleDestroy(): Promise<void> {
    this.draining = true;
    if (this.inFlight.size > 0) {
      this.logger.log(`Waiting for ${this.inFlight.size} upstream request(s) to finish`);
      await Promise.allSettled([...this.inFlight].map((entry) => entry.reply));
    }
    clearInterval(this.sweeper);
  }

  /** Runs one event; the reply settles when the handler answers or its deadline passes. */
  private start(headers: IncomingHttpHeaders, body: Buffer): Promise<UpstreamReply> {
    const timeout = this.config.handlerTimeout;
    let settle!: (reply: UpstreamReply) => void;
    const entry: InFlight = {
      info: {},
      started: Logger.isLevelEnabled('debug') ? performance.now() : 0,
      expiresAt: timeout > 0 ? Date.now() + timeout : Infinity,
      reply: new Promise<UpstreamReply>((resolve) => (settle = resolve)),
      settle, // assigned by the executor above, which runs first
      done: false,
    };
    this.inFlight.add(entry);
    if (timeout > 0) this.sweeper ??= setInterval(() => this.sweep(), sweepPeriod(timeout)).unref();
    const reply = this.run(headers, body, entry.info);
    if (reply instanceof Promise) void reply.then((answer) => this.finish(entry, answer));
    else this.finish(entry, reply);
    return entry.reply;
  }

  private finish(entry: InFlight, reply: UpstreamReply): void {
    if (entry.done) return; // answered at its deadline already
    entry.done = true;
    this.inFlight.delete(entry);
    if (entry.started) {
      const { hub = '-', event = '-', connectionId = '-' } = entry.info;
      const ms = (performance.now() - entry.started).toFixed(1);
      this.logger.debug(
        `hub=${hub} event=${event} connection=${connectionId} status=${reply.status} ${ms}ms`,
      );
    }
    entry.settle(reply);
  }

  /**
   * One timer for all requests instead of one per request: answers 504 for those past their
   * deadline (handlers cannot be stopped; what they return later is dropped).
   */
  private sweep(): void {
    const now = Date.now();
    for (const entry of this.inFlight) {
      if (entry.expiresAt > now) continue;
      const error = new HandlerTimeoutError(
        entry.info.handler ?? 'The handler',
        this.config.handlerTimeout,
      );
      this.finish(entry, this.failure(error, entry.info));
    }
    if (this.inFlight.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  /** Checks and decodes synchronously; only the handler's own work is awaited. */
  private run(
    headers: IncomingHttpHeaders,
    body: Buffer,
    info: EventInfo,
  ): UpstreamReply | Promise<UpstreamReply> {
    let call: HandlerCall | UpstreamReply;
    try {
      call = this.prepare(headers, body, info);
    } catch (err) {
      return this.failure(err, info);
    }
    if (!('context' in call)) return call;
    return call.handler.invoke(call.data, call.context).then(
      (result) => {
        try {
          return this.complete(call, result);
        } catch (err) {
          return this.failure(err, info);
        }
      },
      (err: unknown) => this.userEventErrorReply(call, err) ?? this.failure(err, info),
    );
  }

  /**
   * With `onUserEventError`, a client error of a user event (validation, a guard's refusal, a
   * thrown 4xx) becomes a reply: a non-2xx answer would close the client's connection.
   */
  private userEventErrorReply(call: HandlerCall, err: unknown): UpstreamReply | undefined {
    const handle = this.config.onUserEventError;
    if (!handle || call.kind !== 'user' || !(err instanceof HttpException)) return undefined;
    if (err.getStatus() >= 500) return undefined;
    this.logger.debug(`${call.handler.name}: ${err.message}; answered through onUserEventError`);
    return this.complete(call, handle(err, call.context));
  }

  private prepare(
    headers: IncomingHttpHeaders,
    body: Buffer,
    info: EventInfo,
  ): HandlerCall | UpstreamReply {
    for (const name of REQUIRED_EVENT_HEADERS) {
      if (!headers[name]) {
        const missing = REQUIRED_EVENT_HEADERS.filter((required) => !headers[required]);
        throw new BadRequestException(Messages.missingHeaders(missing));
      }
    }
    const get = (name: string) => header(headers, name);

    info.hub = get(CeHeaders.hub)!;
    info.event = decodeHeaderText(get(CeHeaders.eventName)!);
    info.connectionId = get(CeHeaders.connectionId)!;

    const specVersion = get(CeHeaders.specVersion)!;
    if (specVersion !== '1.0') throw new BadRequestException(Messages.badSpecVersion(specVersion));
    const type = parseEventType(decodeHeaderText(get(CeHeaders.type)!));
    if (!type) throw new BadRequestException(Messages.unknownType(get(CeHeaders.type)!));

    const hub = this.explorer.getHub(info.hub);
    if (!hub) throw new NotFoundException(Messages.unknownHub(info.hub));

    const handler = this.handlerFor(hub, type.kind, type.userEvent);
    if (!handler) {
      // Clients choose event names: no warning per event, which would let them flood the log.
      this.logger.debug(`No handler for ${info.event} in hub "${hub.hub}"; answered 204`);
      return { status: 204, headers: {} };
    }
    const { data, dataType } = this.decode(type.kind, get('content-type'), body);
    const physicalConnectionId = get(CeHeaders.physicalConnectionId);
    // MQTT shows in the subprotocol and physical connection id, or in a connect body's `mqtt`.
    const mqttVersion =
      type.kind === 'connect' ? (data as ConnectRequest).mqtt?.protocolVersion : undefined;
    const isMqtt =
      mqttVersion !== undefined ||
      (!!physicalConnectionId && /mqtt/i.test(get(CeHeaders.subprotocol) ?? ''));
    if (mqttVersion !== undefined) info.mqttVersion = mqttVersion;
    info.handler = handler.name;

    const context = new WebPubSubContext({
      hub: info.hub,
      connectionId: info.connectionId,
      eventName: info.event,
      kind: type.kind,
      id: get(CeHeaders.id)!,
      time: get(CeHeaders.time),
      userId: optionalText(get(CeHeaders.userId)),
      subprotocol: get(CeHeaders.subprotocol),
      origin: get(CeHeaders.requestOrigin),
      signature: get(CeHeaders.signature),
      physicalConnectionId,
      sessionId: get(CeHeaders.sessionId),
      isMqtt,
      mqttUserProperties:
        isMqtt && type.kind === 'user' ? readMqttUserProperties(headers) : undefined,
      dataType,
      headers: withoutCredentials(headers),
      states: this.decodeStates(get(CeHeaders.connectionState), info),
      onIgnoredStateChange: this.warnIgnoredState,
    });
    return { handler, kind: type.kind, data, context };
  }

  private complete(call: HandlerCall, result: unknown): UpstreamReply {
    const reply = this.encode(call.kind, result, call.data);
    if (BLOCKING_EVENTS.has(call.kind) && call.context.stateChanged) {
      reply.headers[CeHeaders.connectionState] = encodeConnectionState(
        call.context.states as ConnectionStates,
      );
    }
    return reply;
  }

  private readonly warnIgnoredState = (context: WebPubSubContext) =>
    this.logger.warn(
      `Connection state cannot be changed from a "${context.eventName}" event of hub "${context.hub}" (only connect and user events can); the change is ignored`,
    );

  private handlerFor(
    hub: HubHandlers,
    kind: WebPubSubEventKind,
    userEvent: string | undefined,
  ): EventHandler | undefined {
    if (kind !== 'user') return hub.system.get(kind);
    return hub.userEvents.get(userEvent!) ?? hub.anyUserEvent;
  }

  private decode(
    kind: WebPubSubEventKind,
    contentType: string | undefined,
    body: Buffer,
  ): { data: unknown; dataType?: UserEventDataType } {
    try {
      switch (kind) {
        case 'connect':
          return { data: decodeConnectBody(body) };
        case 'connected':
          return { data: {} };
        case 'disconnected':
          return { data: decodeDisconnectedBody(body) };
        case 'groupJoined':
        case 'groupLeft':
          return { data: decodeGroupBody(body) };
        case 'user':
          return decodeUserEventBody(contentType, body);
      }
    } catch (err) {
      if (err instanceof InvalidBodyError) throw new BadRequestException(err.message);
      throw err;
    }
  }

  private decodeStates(value: string | undefined, info: EventInfo): ConnectionStates {
    try {
      return decodeConnectionState(value);
    } catch (err) {
      this.logger.warn(
        `Ignoring the malformed ce-connectionState of connection ${info.connectionId} (${(err as Error).message})`,
      );
      return {};
    }
  }

  private encode(kind: WebPubSubEventKind, result: unknown, data: unknown): UpstreamReply {
    let encoded: EncodedReply | undefined;
    if (kind === 'user') encoded = encodeUserEventReply(result);
    else if (kind === 'connect') {
      encoded = encodeConnectReply(result);
      const chosen = (result as { subprotocol?: string } | undefined)?.subprotocol;
      const offered = (data as ConnectRequest).subprotocols;
      if (chosen && !offered.includes(chosen)) {
        throw new TypeError(Messages.badSubprotocol(chosen, offered));
      }
    }
    return encoded
      ? {
          status: 200,
          headers: { ...encoded.headers, 'content-type': encoded.contentType },
          body: encoded.body,
        }
      : { status: 204, headers: {} };
  }

  /** A thrown `HttpException` answers with its status; anything else is logged and answered 500. */
  private failure(err: unknown, info: EventInfo): UpstreamReply {
    const where = info.handler
      ? `${info.handler} (hub "${info.hub}", event "${info.event}", connection ${info.connectionId})`
      : `hub "${info.hub ?? '-'}", event "${info.event ?? '-'}"`;
    let exception: HttpException;
    if (err instanceof HandlerTimeoutError) {
      this.logger.error(`${where}: ${err.message}`);
      exception = new GatewayTimeoutException(Messages.handlerTimeout);
    } else if (err instanceof HttpException) {
      if (err.getStatus() >= 500) this.logger.error(`${where} failed: ${err.message}`, err.stack);
      exception = err;
    } else {
      if (err instanceof Error) this.logger.error(`${where} failed: ${err.message}`, err.stack);
      else this.logger.error(`${where} threw a non-Error value: ${describe(err)}`);
      exception = new InternalServerErrorException(Messages.internal);
    }
    return info.mqttVersion === undefined
      ? errorReply(exception)
      : mqttConnectErrorReply(exception, info.mqttVersion);
  }
}

/** Raised when a handler has not answered within `handlerTimeout`. */
class HandlerTimeoutError extends Error {
  constructor(handler: string, ms: number) {
    super(`${handler} did not answer within ${ms} ms; answered 504`);
  }
}

/**
 * An MQTT client's failed CONNECT: the service reads the reason code from a JSON body. An
 * `MqttConnectException` names its code; other exceptions get the default code of their status.
 */
function mqttConnectErrorReply(exception: HttpException, protocolVersion: number): UpstreamReply {
  const mqtt = exception instanceof MqttConnectException ? exception : undefined;
  const code = mqtt
    ? mqttCodeForVersion(mqtt.code, protocolVersion)
    : statusToMqttCode(exception.getStatus(), protocolVersion);
  const status = mqtt ? mqttCodeToStatus(code, protocolVersion) : exception.getStatus();
  return {
    status,
    headers: { 'content-type': JSON_CONTENT_TYPE },
    body: Buffer.from(mqttConnectErrorBody(code, exception.message, mqtt?.userProperties)),
  };
}

/** The request headers for handlers and their loggers, without the service's bearer token. */
function withoutCredentials(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  if (headers.authorization === undefined) return headers;
  const { authorization: _, ...rest } = headers;
  return rest;
}

/**
 * Retries carry the same connection and `ce-id` (unique per connection only). An MQTT client id
 * outlives its network connections, whose ids restart: the physical connection tells them apart.
 */
function deduplicationKey(headers: IncomingHttpHeaders): string | undefined {
  const hub = header(headers, CeHeaders.hub);
  const connectionId = header(headers, CeHeaders.connectionId);
  const id = header(headers, CeHeaders.id);
  const physical = header(headers, CeHeaders.physicalConnectionId) ?? '';
  return hub && connectionId && id
    ? `${hub.toLowerCase()}\n${connectionId}\n${physical}\n${id}`
    : undefined;
}

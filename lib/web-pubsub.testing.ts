/**
 * A testing kit for apps that use the module: send the exact requests Azure Web PubSub sends,
 * signed, over real HTTP, and read typed results, without the service or the emulator.
 *
 *   const client = new WebPubSubTestClient(app, { hub: 'chat', connectionString });
 *   await client.connect({ query: { user: ['ann'] } });
 *   const reply = await client.event('say', { text: 'hi' });
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import {
  CeHeaders,
  decodeConnectionState,
  decodeUserEventBody,
  encodeHeaderText,
  eventType,
  mqttUserPropertyHeaders,
  parseConnectionString,
  signatureHeader,
  type ConnectRequest,
  type ConnectionStates,
  type MqttUserProperty,
  type UserEventDataType,
  type WebPubSubEventKind,
} from './web-pubsub.protocol.js';

/** A Nest application (initialized and listening on demand), or the URL of a running app. */
export type TestTarget =
  string | { getHttpServer(): unknown; listen?(port: number, host: string): Promise<unknown> };

export interface EventHeadersOptions {
  hub: string;
  connectionId: string;
  kind: WebPubSubEventKind;
  /** User events: the event name (default `message`). */
  event?: string;
  accessKeys: readonly string[];
  userId?: string;
  subprotocol?: string;
  /** The encoded state, as the service echoes it. */
  connectionState?: string;
  eventId?: number | string;
  origin?: string;
  contentType?: string;
  /** MQTT clients: the id of the network connection (`ce-physicalConnectionId`). */
  physicalConnectionId?: string;
  /** MQTT 5 user properties of a user event, sent as `mqtt-<name>` headers. */
  mqttUserProperties?: readonly MqttUserProperty[];
}

const EVENT_NAMES: Partial<Record<WebPubSubEventKind, string>> = {
  groupJoined: 'joined',
  groupLeft: 'left',
};

/** The headers the service sends with one event, signed with every given key. */
export function createEventHeaders(options: EventHeadersOptions): Record<string, string> {
  const { hub, connectionId, kind } = options;
  const headers: Record<string, string> = {
    [CeHeaders.specVersion]: '1.0',
    [CeHeaders.awpsVersion]: '1.0',
    [CeHeaders.type]: encodeHeaderText(eventType(kind, options.event)),
    [CeHeaders.source]: `/hubs/${hub}/client/${connectionId}`,
    [CeHeaders.id]: String(options.eventId ?? 0),
    [CeHeaders.time]: new Date().toISOString(),
    [CeHeaders.hub]: hub,
    [CeHeaders.connectionId]: connectionId,
    [CeHeaders.eventName]: encodeHeaderText(
      kind === 'user' ? (options.event ?? 'message') : (EVENT_NAMES[kind] ?? kind),
    ),
    [CeHeaders.requestOrigin]: options.origin ?? 'localhost',
    'content-type': options.contentType ?? 'application/json; charset=utf-8',
  };
  if (options.accessKeys.length) {
    headers[CeHeaders.signature] = signatureHeader(options.accessKeys, connectionId);
  }
  if (options.userId !== undefined) headers[CeHeaders.userId] = encodeHeaderText(options.userId);
  if (options.subprotocol) headers[CeHeaders.subprotocol] = options.subprotocol;
  if (options.connectionState) headers[CeHeaders.connectionState] = options.connectionState;
  if (options.physicalConnectionId) {
    headers[CeHeaders.physicalConnectionId] = options.physicalConnectionId;
  }
  for (const [name, values] of Object.entries(
    mqttUserPropertyHeaders(options.mqttUserProperties ?? []),
  )) {
    headers[name] = values.join(', ');
  }
  return headers;
}

/** What the app answered to one event. */
export interface TestEventResult<T = unknown> {
  status: number;
  /** 2xx */
  ok: boolean;
  /** Response headers, lower-cased. */
  headers: Record<string, string>;
  body: Buffer;
  /** The body decoded by its Content-Type: string, parsed JSON, Buffer; `undefined` when empty. */
  data: T;
  dataType?: UserEventDataType;
  /** The state the app set with this answer (`{}` when it cleared it), or `undefined` if unchanged. */
  newStates?: ConnectionStates;
  /** The `message` of an error answer. */
  error?: string;
}

export interface WebPubSubTestClientOptions {
  hub: string;
  /** Gives the access key, as the service signs with it. */
  connectionString?: string;
  /** Instead of a connection string: the keys to sign with (primary, secondary). */
  accessKeys?: string[];
  /** The module's `path`, with any global prefix. Default `/eventhandler`. */
  path?: string;
  /** Default: a random id. */
  connectionId?: string;
  /** The user id in the client's token, if any. */
  userId?: string;
  /** `WebHook-Request-Origin`. Default `localhost`. */
  origin?: string;
  /** Simulate an MQTT client: its connect carries an `mqtt` block, its events the MQTT headers. */
  mqtt?: TestMqttOptions;
}

export interface ConnectOptions extends Partial<ConnectRequest> {}

export interface EventSendOptions {
  /** Default: `text` for strings, `binary` for bytes, `json` for anything else. */
  dataType?: UserEventDataType;
  /** MQTT clients: user properties of the PUBLISH. */
  mqttUserProperties?: MqttUserProperty[];
}

/** Simulates an MQTT client instead of a WebSocket one. */
export interface TestMqttOptions {
  /** 4 (3.1.1) or 5. Default 5. */
  protocolVersion?: 4 | 5;
  username?: string;
  /** The MQTT password, sent base64-encoded as the service does. */
  password?: string;
  userProperties?: MqttUserProperty[];
  /** Default: a random id. */
  physicalConnectionId?: string;
}

/**
 * One simulated client connection. Like the service, it numbers its events, carries the
 * connection state the app sets from one call to the next, and after `connect` uses the user id
 * and subprotocol the app chose.
 */
export class WebPubSubTestClient {
  readonly hub: string;
  readonly connectionId: string;
  userId?: string;
  subprotocol?: string;
  /** The encoded state the service would echo. */
  private connectionState?: string;
  private nextEventId = 0;
  private readonly accessKeys: string[];
  private readonly path: string;
  private readonly origin?: string;
  private readonly mqtt?: TestMqttOptions & { physicalConnectionId: string };

  constructor(
    private readonly target: TestTarget,
    options: WebPubSubTestClientOptions,
  ) {
    this.hub = options.hub;
    this.connectionId = options.connectionId ?? randomUUID().replaceAll('-', '');
    this.userId = options.userId;
    this.origin = options.origin;
    if (options.mqtt) {
      this.mqtt = {
        ...options.mqtt,
        physicalConnectionId: options.mqtt.physicalConnectionId ?? randomUUID(),
      };
    }
    this.path = '/' + (options.path ?? '/eventhandler').replace(/^\/+/, '');
    if (options.accessKeys) this.accessKeys = options.accessKeys;
    else if (options.connectionString) {
      const { endpoint, accessKey } = parseConnectionString(options.connectionString);
      this.accessKeys = [accessKey];
      // The service's own host, which the module allows by default.
      this.origin ??= new URL(endpoint).hostname;
    } else {
      throw new TypeError('WebPubSubTestClient needs a connectionString or accessKeys');
    }
  }

  /** The decoded connection state the app has set so far. */
  get states(): ConnectionStates {
    try {
      return decodeConnectionState(this.connectionState);
    } catch {
      return {};
    }
  }

  /** Sends `connect`; on success takes the user id and subprotocol the app chose. */
  async connect(request: ConnectOptions = {}): Promise<TestEventResult> {
    const body: ConnectRequest = {
      claims: this.userId !== undefined ? { sub: [this.userId] } : {},
      query: {},
      headers: {},
      subprotocols: [],
      clientCertificates: [],
      ...(this.mqtt && {
        mqtt: {
          protocolVersion: this.mqtt.protocolVersion ?? 5,
          username: this.mqtt.username ?? null,
          password:
            this.mqtt.password === undefined
              ? null
              : Buffer.from(this.mqtt.password, 'utf8').toString('base64'),
          userProperties: this.mqtt.userProperties ?? null,
        },
      }),
      ...request,
    };
    const result = await this.send('connect', undefined, JSON.stringify(body));
    const accepted = result.data as { userId?: string; subprotocol?: string } | undefined;
    if (result.ok && accepted && typeof accepted === 'object') {
      if (accepted.userId !== undefined) this.userId = accepted.userId;
      if (accepted.subprotocol) this.subprotocol = accepted.subprotocol;
    }
    if (result.ok && this.mqtt) this.subprotocol = 'mqtt';
    return result;
  }

  connected(): Promise<TestEventResult> {
    return this.send('connected', undefined, '{}');
  }

  disconnected(reason: string | null = null): Promise<TestEventResult> {
    return this.send('disconnected', undefined, JSON.stringify({ reason }));
  }

  groupJoined(group: string): Promise<TestEventResult> {
    return this.send('groupJoined', undefined, JSON.stringify({ group }));
  }

  groupLeft(group: string): Promise<TestEventResult> {
    return this.send('groupLeft', undefined, JSON.stringify({ group }));
  }

  /** A user event, as a PubSub-subprotocol client's `sendEvent(event, data, dataType)` makes it. */
  event<T = unknown>(
    event: string,
    data: unknown,
    options: EventSendOptions = {},
  ): Promise<TestEventResult<T>> {
    const dataType =
      options.dataType ??
      (typeof data === 'string' ? 'text' : data instanceof Uint8Array ? 'binary' : 'json');
    const encoded: Record<UserEventDataType, () => [string, Uint8Array | string]> = {
      text: () => ['text/plain', String(data)],
      json: () => ['application/json', JSON.stringify(data) ?? 'null'],
      binary: () => ['application/octet-stream', data as Uint8Array],
    };
    const [contentType, body] = encoded[dataType]();
    return this.send('user', event, body, contentType, options.mqttUserProperties) as Promise<
      TestEventResult<T>
    >;
  }

  /** A frame of a simple WebSocket client: the user event `message`. */
  message<T = unknown>(frame: string | Uint8Array): Promise<TestEventResult<T>> {
    return this.event<T>('message', frame);
  }

  /** The abuse-protection probe; resolves to the `WebHook-Allowed-Origin` answer. */
  async validate(origin = this.origin ?? 'localhost'): Promise<TestEventResult> {
    const response = await fetch(await this.url(), {
      method: 'OPTIONS',
      headers: { [CeHeaders.requestOrigin]: origin, [CeHeaders.awpsVersion]: '1.0' },
    });
    return this.read(response, false);
  }

  private async send(
    kind: WebPubSubEventKind,
    event: string | undefined,
    body: string | Uint8Array,
    contentType?: string,
    mqttUserProperties?: MqttUserProperty[],
  ): Promise<TestEventResult> {
    const headers = createEventHeaders({
      hub: this.hub,
      connectionId: this.connectionId,
      kind,
      event,
      accessKeys: this.accessKeys,
      userId: this.userId,
      subprotocol: kind === 'connect' ? undefined : this.subprotocol,
      connectionState: this.connectionState,
      eventId: this.nextEventId++,
      origin: this.origin,
      contentType,
      physicalConnectionId: this.mqtt?.physicalConnectionId,
      mqttUserProperties,
    });
    const response = await fetch(await this.url(), {
      method: 'POST',
      headers,
      body: body as Uint8Array<ArrayBuffer> | string,
    });
    // Only blocking events carry state back, as on the service.
    return this.read(response, kind === 'connect' || kind === 'user');
  }

  private async read(response: Response, takesState: boolean): Promise<TestEventResult> {
    const body = Buffer.from(await response.arrayBuffer());
    const headers: Record<string, string> = {};
    response.headers.forEach((value, name) => (headers[name] = value));
    const result: TestEventResult = {
      status: response.status,
      ok: response.ok,
      headers,
      body,
      data: undefined,
    };
    if (body.length) {
      try {
        const decoded = decodeUserEventBody(headers['content-type'], body);
        result.data = decoded.data;
        result.dataType = decoded.dataType;
      } catch {
        result.data = body;
      }
    }
    if (!response.ok) {
      const message = (result.data as { message?: unknown } | undefined)?.message;
      result.error = Array.isArray(message) ? message.join('; ') : String(message ?? body);
    }
    const state = headers[CeHeaders.connectionState];
    if (takesState && response.ok && state !== undefined) {
      this.connectionState = state || undefined;
      result.newStates = state ? decodeConnectionState(state) : {};
    }
    return result;
  }

  private url(): Promise<string> {
    return baseUrlOf(this.target).then((base) => base + this.path);
  }
}

/** One start per app, however many clients use it at once. */
const baseUrls = new WeakMap<object, Promise<string>>();

function baseUrlOf(target: TestTarget): Promise<string> {
  if (typeof target === 'string') return resolveBaseUrl(target);
  let url = baseUrls.get(target);
  if (!url) baseUrls.set(target, (url = resolveBaseUrl(target)));
  return url;
}

/** The URL of a running app; a Nest app that is not listening yet is started on a random loopback port. */
async function resolveBaseUrl(target: TestTarget): Promise<string> {
  if (typeof target === 'string') return target.replace(/\/+$/, '');
  let server = target.getHttpServer() as Server;
  if (!server.listening) {
    // Nest's own listen() also readies the adapter (Fastify answers nothing before that).
    if (target.listen) await target.listen(0, '127.0.0.1');
    else {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
    }
    server = target.getHttpServer() as Server;
  }
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host === '::' || host === '[::]' ? '127.0.0.1' : host}:${address.port}`;
}

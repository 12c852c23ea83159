/**
 * The Azure Web PubSub upstream protocol as pure functions: CloudEvents headers, signatures,
 * abuse protection, connection state and the encoding of bodies and replies.
 * Nothing here knows about Nest, so it is shared by the module, the emulator and the testing kit.
 */
import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';

/** Lower-case header names, as Node hands them to us. */
export const CeHeaders = {
  specVersion: 'ce-specversion',
  awpsVersion: 'ce-awpsversion',
  type: 'ce-type',
  source: 'ce-source',
  id: 'ce-id',
  time: 'ce-time',
  signature: 'ce-signature',
  hub: 'ce-hub',
  connectionId: 'ce-connectionid',
  eventName: 'ce-eventname',
  userId: 'ce-userid',
  subprotocol: 'ce-subprotocol',
  connectionState: 'ce-connectionstate',
  physicalConnectionId: 'ce-physicalconnectionid',
  sessionId: 'ce-sessionid',
  requestOrigin: 'webhook-request-origin',
  allowedOrigin: 'webhook-allowed-origin',
} as const;

/** The headers every event POST must carry (CloudEvents' required attributes plus the routing ones). */
export const REQUIRED_EVENT_HEADERS = [
  CeHeaders.specVersion,
  CeHeaders.type,
  CeHeaders.source,
  CeHeaders.id,
  CeHeaders.hub,
  CeHeaders.connectionId,
  CeHeaders.eventName,
] as const;

export const MAX_BODY_SIZE = 1024 * 1024;

/** Which handler an event goes to. */
export type WebPubSubEventKind =
  'connect' | 'connected' | 'disconnected' | 'user' | 'groupJoined' | 'groupLeft';

/** Events whose answer the service waits for, and the only ones that may change the state. */
export const BLOCKING_EVENTS: ReadonlySet<WebPubSubEventKind> = new Set(['connect', 'user']);

const SYSTEM_TYPES: Record<string, WebPubSubEventKind> = {
  'azure.webpubsub.sys.connect': 'connect',
  'azure.webpubsub.sys.connected': 'connected',
  'azure.webpubsub.sys.disconnected': 'disconnected',
  'azure.webpubsub.gp.joined': 'groupJoined',
  'azure.webpubsub.gp.left': 'groupLeft',
};
const USER_TYPE_PREFIX = 'azure.webpubsub.user.';

/**
 * Header values are bytes; Node reads them as Latin-1. Text outside ASCII (a user id like
 * `Łukasz`, a user event name) travels as its UTF-8 bytes, so it is written as those bytes and
 * read back from them.
 */
export function encodeHeaderText(text: string): string {
  return /[^\x20-\x7e\t]/.test(text) ? Buffer.from(text, 'utf8').toString('latin1') : text;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The inverse of {@link encodeHeaderText}; a value that is not UTF-8 is returned as it came. */
export function decodeHeaderText(value: string): string {
  if (!/[\x80-\xff]/.test(value) || /[\u0100-\uffff]/.test(value)) return value;
  try {
    return strictUtf8.decode(Buffer.from(value, 'latin1'));
  } catch {
    return value;
  }
}

/** Maps a `ce-type` to the kind of event, or `undefined` for a type the protocol does not define. */
export function parseEventType(
  ceType: string,
): { kind: WebPubSubEventKind; userEvent?: string } | undefined {
  const system = SYSTEM_TYPES[ceType];
  if (system) return { kind: system };
  if (ceType.startsWith(USER_TYPE_PREFIX) && ceType.length > USER_TYPE_PREFIX.length) {
    return { kind: 'user', userEvent: ceType.slice(USER_TYPE_PREFIX.length) };
  }
  return undefined;
}

/** The `ce-type` of an event, the inverse of {@link parseEventType}. */
export function eventType(kind: WebPubSubEventKind, userEvent = 'message'): string {
  if (kind === 'user') return USER_TYPE_PREFIX + userEvent;
  for (const [type, k] of Object.entries(SYSTEM_TYPES)) if (k === kind) return type;
  throw new TypeError(`Unknown event kind "${kind}"`);
}

// ---------------------------------------------------------------------------------------------
// Connection string and signatures

export interface ParsedConnectionString {
  /** Endpoint URL without a trailing slash, the `Port=` part applied. */
  endpoint: string;
  accessKey: string;
}

/** Parses `Endpoint=…;AccessKey=…;Version=1.0;[Port=…;]` the way `@azure/web-pubsub` does. */
export function parseConnectionString(connectionString: string): ParsedConnectionString {
  const parts = new Map<string, string>();
  for (const segment of connectionString.split(';')) {
    const eq = segment.indexOf('=');
    if (eq <= 0) continue;
    parts.set(segment.slice(0, eq).trim().toLowerCase(), segment.slice(eq + 1).trim());
  }
  let endpoint = parts.get('endpoint');
  const accessKey = parts.get('accesskey');
  if (!endpoint || !accessKey) {
    throw new TypeError(
      'Invalid Web PubSub connection string: expected "Endpoint=…;AccessKey=…;Version=1.0;"',
    );
  }
  if (!/^https?:\/\//i.test(endpoint)) endpoint = `https://${endpoint}`;
  const url = new URL(endpoint);
  const port = parts.get('port');
  if (port) url.port = port;
  return { endpoint: url.toString().replace(/\/+$/, ''), accessKey };
}

/**
 * `sha256=<hex>` of HMAC-SHA256 over the connection id. The key is the access key string as UTF-8
 * bytes: it looks like base64 but is never decoded.
 */
export function computeSignature(accessKey: string, connectionId: string): string {
  return (
    'sha256=' +
    createHmac('sha256', Buffer.from(accessKey, 'utf8')).update(connectionId).digest('hex')
  );
}

/** The `ce-signature` header value the service sends: one entry per access key. */
export function signatureHeader(accessKeys: readonly string[], connectionId: string): string {
  return accessKeys.map((key) => computeSignature(key, connectionId)).join(',');
}

/** Expected digests remembered per connection id: a connection's signature never changes. */
const SIGNATURE_CACHE_SIZE = 10_000;

/**
 * Builds a verifier for a fixed set of access keys (key objects are made once). The header may
 * hold several comma- or space-separated `sha256=` values; one matching any key is enough. Hex case
 * is ignored and the comparison is constant-time. The expected digests of recent connections are
 * kept (bounded), as the service signs every event of a connection alike.
 */
export function createSignatureVerifier(
  accessKeys: readonly string[],
): (connectionId: string, header: string | undefined) => boolean {
  const keys: KeyObject[] = accessKeys.map((key) => createSecretKey(Buffer.from(key, 'utf8')));
  const expectedByConnection = new Map<string, Buffer[]>();
  const expectedFor = (connectionId: string) => {
    let expected = expectedByConnection.get(connectionId);
    if (!expected) {
      expected = keys.map((key) => createHmac('sha256', key).update(connectionId).digest());
      if (expectedByConnection.size >= SIGNATURE_CACHE_SIZE) {
        expectedByConnection.delete(expectedByConnection.keys().next().value!);
      }
      expectedByConnection.set(connectionId, expected);
    }
    return expected;
  };
  return (connectionId, header) => {
    if (!header || keys.length === 0) return false;
    const expected = expectedFor(connectionId);
    let ok = false;
    for (const raw of header.includes(' ') ? header.split(/[\s,]+/) : header.split(',')) {
      const candidate = parseSignatureValue(raw);
      if (!candidate) continue;
      // No early exit: every candidate is compared against every key.
      for (const digest of expected) ok = timingSafeEqual(digest, candidate) || ok;
    }
    return ok;
  };
}

/** `sha256=<64 hex digits>` → the 32 digest bytes, or `undefined` for anything else. */
function parseSignatureValue(value: string): Buffer | undefined {
  if (value.length !== 71 || value.slice(0, 7).toLowerCase() !== 'sha256=') return undefined;
  const digest = Buffer.from(value.slice(7), 'hex');
  // Buffer.from stops at the first non-hex character, leaving fewer than 32 bytes.
  return digest.length === 32 ? digest : undefined;
}

// ---------------------------------------------------------------------------------------------
// Abuse protection

/** The hosts in `WebHook-Request-Origin`: several may come, separated by commas and/or spaces. */
export function parseRequestOrigins(header: string | string[] | undefined): string[] {
  const value = Array.isArray(header) ? header.join(',') : (header ?? '');
  return value
    .split(/[\s,]+/)
    .map((host) => host.trim().toLowerCase())
    .filter(Boolean);
}

/** `https://x.webpubsub.azure.com/` or `x.webpubsub.azure.com` → `x.webpubsub.azure.com`. */
export function normalizeAllowedEndpoint(entry: string): string {
  const trimmed = entry.trim();
  if (trimmed === '*') return '*';
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed : `https://${trimmed}`;
  return new URL(withScheme).host.toLowerCase();
}

const hostname = (host: string) => host.replace(/:\d+$/, '');

/**
 * The value for `WebHook-Allowed-Origin`: `*` when any host is allowed, else the first request
 * host found in the allowed list (ports ignored: the service sends bare host names), else
 * `undefined` (the probe must be refused).
 */
export function resolveAllowedOrigin(
  requestOrigins: readonly string[],
  allowedHosts: readonly string[],
): string | undefined {
  if (allowedHosts.includes('*')) return '*';
  const allowed = new Set(allowedHosts.map(hostname));
  return requestOrigins.find((origin) => allowed.has(hostname(origin)));
}

// ---------------------------------------------------------------------------------------------
// Connection state: base64 of a JSON object, the format `@azure/web-pubsub-express` uses.

export type ConnectionStates = Record<string, unknown>;

/** Decodes `ce-connectionState`; throws on anything that is not base64 of a JSON object. */
export function decodeConnectionState(header: string | undefined): ConnectionStates {
  if (!header) return {};
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(header)) {
    throw new TypeError('connection state is not base64');
  }
  const value: unknown = JSON.parse(Buffer.from(header, 'base64').toString('utf8'));
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError('connection state is not a JSON object');
  }
  return value as ConnectionStates;
}

/** Encodes the whole state map; an empty map encodes as `""`, which clears the state on the service. */
export function encodeConnectionState(states: ConnectionStates): string {
  return Object.keys(states).length === 0
    ? ''
    : Buffer.from(JSON.stringify(states), 'utf8').toString('base64');
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/** Map values are arrays of strings, as the service sends them. */
export type StringArrayMap = Record<string, string[]>;

export interface ClientCertificate {
  thumbprint: string;
  content: string;
}

export interface MqttConnectProperties {
  protocolVersion: number;
  username: string | null;
  /** base64 of the MQTT password bytes */
  password: string | null;
  userProperties: Array<{ name: string; value: string }> | null;
}

/** The `connect` event body. Every map value is an array, even a single query parameter. */
export interface ConnectRequest {
  claims: StringArrayMap;
  query: StringArrayMap;
  headers: StringArrayMap;
  subprotocols: string[];
  clientCertificates: ClientCertificate[];
  mqtt?: MqttConnectProperties;
}

/** What a `connect` handler may return to accept the client with overrides. */
export interface ConnectResponse {
  userId?: string;
  groups?: string[];
  roles?: string[];
  /** One of `ConnectRequest.subprotocols`; leave it out rather than sending `""`. */
  subprotocol?: string;
}

export interface DisconnectedRequest {
  reason: string | null;
  mqtt?: {
    initiatedByClient: boolean;
    disconnectPacket: {
      code: number;
      userProperties: Array<{ name: string; value: string }> | null;
    } | null;
  };
}

export interface GroupEventRequest {
  group: string;
}

export type UserEventDataType = 'text' | 'json' | 'binary';

/** The exception `decode*` functions throw for a body the protocol does not allow. */
export class InvalidBodyError extends Error {
  override name = 'InvalidBodyError';
}

/** `application/json; charset=utf-8` → `application/json`. */
export function mediaType(contentType: string | undefined): string {
  if (!contentType) return '';
  const semi = contentType.indexOf(';');
  return (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeText(body: Uint8Array): string {
  try {
    return utf8.decode(body);
  } catch {
    throw new InvalidBodyError('body is not valid UTF-8');
  }
}

function decodeJson(body: Uint8Array): unknown {
  const text = decodeText(body);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InvalidBodyError(`body is not valid JSON: ${(err as Error).message}`);
  }
}

function decodeObject(body: Uint8Array, event: string): Record<string, unknown> {
  if (body.length === 0) return {};
  const value = decodeJson(body);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidBodyError(`the ${event} body must be a JSON object`);
  }
  return value as Record<string, unknown>;
}

const isStringArrayMap = (value: unknown): value is StringArrayMap =>
  typeof value === 'object' &&
  value !== null &&
  !Array.isArray(value) &&
  Object.values(value).every((v) => Array.isArray(v) && v.every((s) => typeof s === 'string'));

/** Decodes and checks a `connect` body; missing maps and lists become empty ones. */
export function decodeConnectBody(body: Uint8Array): ConnectRequest {
  const raw = decodeObject(body, 'connect');
  const request: ConnectRequest = {
    ...raw,
    claims: (raw.claims as StringArrayMap | undefined) ?? {},
    query: (raw.query as StringArrayMap | undefined) ?? {},
    headers: (raw.headers as StringArrayMap | undefined) ?? {},
    subprotocols: (raw.subprotocols as string[] | undefined) ?? [],
    clientCertificates: (raw.clientCertificates as ClientCertificate[] | undefined) ?? [],
  };
  for (const key of ['claims', 'query', 'headers'] as const) {
    if (!isStringArrayMap(request[key])) {
      throw new InvalidBodyError(`connect body: "${key}" must map names to arrays of strings`);
    }
  }
  if (
    !Array.isArray(request.subprotocols) ||
    !request.subprotocols.every((p) => typeof p === 'string')
  ) {
    throw new InvalidBodyError('connect body: "subprotocols" must be an array of strings');
  }
  if (!Array.isArray(request.clientCertificates)) {
    throw new InvalidBodyError('connect body: "clientCertificates" must be an array');
  }
  return request;
}

export function decodeDisconnectedBody(body: Uint8Array): DisconnectedRequest {
  const raw = decodeObject(body, 'disconnected');
  const reason = raw.reason ?? null;
  if (reason !== null && typeof reason !== 'string') {
    throw new InvalidBodyError('disconnected body: "reason" must be a string');
  }
  return { ...raw, reason } as DisconnectedRequest;
}

export function decodeGroupBody(body: Uint8Array): GroupEventRequest {
  const raw = decodeObject(body, 'group event');
  if (typeof raw.group !== 'string') {
    throw new InvalidBodyError('group event body: "group" must be a string');
  }
  return raw as unknown as GroupEventRequest;
}

/**
 * A user event's data by its Content-Type: `text/*` → string, JSON (`application/json` or
 * `+json`) → the parsed value (which may be a bare string, number, boolean or null), anything
 * else → the bytes as a Buffer.
 */
export function decodeUserEventBody(
  contentType: string | undefined,
  body: Buffer,
): { data: unknown; dataType: UserEventDataType } {
  const type = mediaType(contentType);
  if (type === 'application/json' || type.endsWith('+json')) {
    return { data: decodeJson(body), dataType: 'json' };
  }
  if (type.startsWith('text/')) return { data: decodeText(body), dataType: 'text' };
  return { data: body, dataType: 'binary' };
}

// ---------------------------------------------------------------------------------------------
// MQTT user properties

export interface MqttUserProperty {
  name: string;
  value: string;
}

const MQTT_PREFIX = 'mqtt-';

/** MQTT 5 user properties of a user event, from its `mqtt-<name>` headers (names lower-cased by HTTP). */
export function readMqttUserProperties(
  headers: Readonly<Record<string, string | string[] | undefined>>,
): MqttUserProperty[] {
  const properties: MqttUserProperty[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (!name.startsWith(MQTT_PREFIX) || value === undefined) continue;
    for (const item of [value].flat())
      properties.push({ name: name.slice(MQTT_PREFIX.length), value: item });
  }
  return properties;
}

/** `mqtt-<name>` response headers for user properties of a reply. */
export function mqttUserPropertyHeaders(
  properties: readonly MqttUserProperty[],
): Record<string, string[]> {
  const headers: Record<string, string[]> = {};
  for (const { name, value } of properties) {
    // They travel as HTTP headers: a name must be a header token, a value visible ASCII.
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || !/^[\t\x20-\x7e]*$/.test(value)) {
      throw new TypeError(
        `MQTT user property ${JSON.stringify(name)}=${JSON.stringify(value)} cannot be sent: names must be header tokens and values printable ASCII`,
      );
    }
    (headers[MQTT_PREFIX + name.toLowerCase()] ??= []).push(value);
  }
  return headers;
}

// ---------------------------------------------------------------------------------------------
// Replies

/** A reply ready for the wire. */
export interface EncodedReply {
  contentType: string;
  body: Buffer;
  headers?: Record<string, string[]>;
}

export interface ReplyOptions {
  /** MQTT clients: user properties of the reply PUBLISH (sent as `mqtt-<name>` headers). */
  mqttUserProperties?: MqttUserProperty[];
}

const TEXT = 'text/plain; charset=utf-8';
export const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';
const BINARY = 'application/octet-stream';

/**
 * A user-event reply with an explicit data type. Return one from a handler when the default
 * mapping does not fit, e.g. `WebPubSubReply.json('hello')` sends the JSON string `"hello"`
 * rather than the text `hello`.
 */
export class WebPubSubReply {
  private constructor(
    readonly dataType: UserEventDataType,
    readonly data: unknown,
    readonly options: ReplyOptions = {},
  ) {}

  static text(data: string, options?: ReplyOptions): WebPubSubReply {
    return new WebPubSubReply('text', data, options);
  }

  static json(data: unknown, options?: ReplyOptions): WebPubSubReply {
    return new WebPubSubReply('json', data, options);
  }

  static binary(data: Uint8Array | ArrayBuffer, options?: ReplyOptions): WebPubSubReply {
    return new WebPubSubReply('binary', data, options);
  }

  /** @internal */
  encode(): EncodedReply {
    const encoded = this.encodeData();
    const properties = this.options.mqttUserProperties;
    return properties?.length
      ? { ...encoded, headers: mqttUserPropertyHeaders(properties) }
      : encoded;
  }

  private encodeData(): EncodedReply {
    switch (this.dataType) {
      case 'text':
        return { contentType: TEXT, body: Buffer.from(String(this.data), 'utf8') };
      case 'json': {
        const json = JSON.stringify(this.data);
        if (json === undefined)
          throw new TypeError('WebPubSubReply.json(): value has no JSON form');
        return { contentType: JSON_CONTENT_TYPE, body: Buffer.from(json, 'utf8') };
      }
      case 'binary':
        return { contentType: BINARY, body: toBuffer(this.data as Uint8Array | ArrayBuffer) };
    }
  }
}

const toBuffer = (data: Uint8Array | ArrayBuffer): Buffer =>
  data instanceof ArrayBuffer
    ? Buffer.from(data)
    : Buffer.from(data.buffer, data.byteOffset, data.byteLength);

/**
 * A user-event handler's return value on the wire: `undefined`/`null` → nothing (204); string →
 * text; Buffer/typed array/ArrayBuffer → binary; anything else → JSON.
 */
export function encodeUserEventReply(value: unknown): EncodedReply | undefined {
  if (value === undefined || value === null) return undefined;
  if (value instanceof WebPubSubReply) return value.encode();
  if (typeof value === 'string') return { contentType: TEXT, body: Buffer.from(value, 'utf8') };
  if (value instanceof Uint8Array || value instanceof ArrayBuffer) {
    return { contentType: BINARY, body: toBuffer(value) };
  }
  return WebPubSubReply.json(value).encode();
}

/**
 * A connect handler's return value on the wire: nothing → 204; an object → 200 JSON as returned
 * (`userId`, `groups`, `roles`, `subprotocol`, MQTT's `mqtt`…), except that an empty
 * `subprotocol` is dropped: the service rejects `""`.
 */
export function encodeConnectReply(value: unknown): EncodedReply | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(
      'a connect handler must return an object ({ userId, groups, roles, subprotocol }) or nothing',
    );
  }
  const { subprotocol, ...rest } = value as ConnectResponse & Record<string, unknown>;
  const response: Record<string, unknown> = { ...rest };
  if (subprotocol) response.subprotocol = subprotocol;
  return { contentType: JSON_CONTENT_TYPE, body: Buffer.from(JSON.stringify(response), 'utf8') };
}

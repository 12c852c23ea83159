/**
 * What every server under test is sent and must answer, and the upstream checks the hand-written
 * servers do themselves, so that each variant does the same work as the module.
 */
import { createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { createEventHeaders } from 'nestjs-web-pubsub/testing';
import type { ChatMessageDto } from './chat-message.dto.js';

export const HUB = 'bench';
export const ACCESS_KEY = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH';
export const CONNECTION_STRING = `Endpoint=http://localhost:8080;AccessKey=${ACCESS_KEY};Version=1.0;`;
export const UPSTREAM_PATH = '/eventhandler';
export const USER_ID = 'bench-user';
const CONNECTION_ID = 'bench-connection-0001';

/** What each handler answers; the validation step compares replies against these. */
export const dtoReply = (dto: Pick<ChatMessageDto, 'sequence'>) => ({ received: dto.sequence });
export const connectReply = (query: Record<string, string[]> | undefined) => ({
  userId: query?.user?.[0] ?? 'anonymous',
});

export type WorkloadName = 'text-64B' | 'text-64KiB' | 'json-dto' | 'connect';

export interface Workload {
  name: WorkloadName;
  /** The user event name (bare Nest routes use it as the last path segment). */
  event: string;
  headers: Record<string, string>;
  body: string;
  /** The exact body a correct server answers with. */
  expectedBody: string;
  expectedContentType: string;
}

export const TEXT_TYPE = 'text/plain; charset=utf-8';
export const JSON_TYPE = 'application/json; charset=utf-8';

function userEvent(
  name: WorkloadName,
  event: string,
  body: string,
  contentType: string,
  expectedBody: string,
): Workload {
  const headers = createEventHeaders({
    hub: HUB,
    connectionId: CONNECTION_ID,
    kind: 'user',
    event,
    userId: USER_ID,
    accessKeys: [ACCESS_KEY],
    contentType,
  });
  const expectedContentType = contentType === TEXT_TYPE ? TEXT_TYPE : JSON_TYPE;
  return { name, event, headers, body, expectedBody, expectedContentType };
}

/** Printable ASCII, so the byte length equals the character length. */
const asciiText = (bytes: number) =>
  Array.from({ length: bytes }, (_, i) => String.fromCharCode(97 + (i % 26))).join('');

const message: ChatMessageDto = { text: 'hello from a benchmark', sequence: 7, tags: ['a', 'b'] };
const connectBody = {
  claims: {},
  query: { user: [USER_ID] },
  headers: {},
  subprotocols: [],
  clientCertificates: [],
};

export const WORKLOADS: Record<WorkloadName, Workload> = {
  'text-64B': userEvent('text-64B', 'echo', asciiText(64), TEXT_TYPE, asciiText(64)),
  'text-64KiB': userEvent(
    'text-64KiB',
    'echo',
    asciiText(64 * 1024),
    TEXT_TYPE,
    asciiText(64 * 1024),
  ),
  'json-dto': userEvent(
    'json-dto',
    'validated',
    JSON.stringify(message),
    JSON_TYPE,
    JSON.stringify(dtoReply(message)),
  ),
  connect: {
    name: 'connect',
    event: 'connect',
    headers: createEventHeaders({
      hub: HUB,
      connectionId: CONNECTION_ID,
      kind: 'connect',
      accessKeys: [ACCESS_KEY],
    }),
    body: JSON.stringify(connectBody),
    expectedBody: JSON.stringify(connectReply(connectBody.query)),
    expectedContentType: JSON_TYPE,
  },
};

// ---------------------------------------------------------------------------------------------
// The upstream checks done by hand in the bare node:http server and the bare Nest routes.

const REQUIRED_HEADERS = [
  'ce-specversion',
  'ce-type',
  'ce-source',
  'ce-id',
  'ce-hub',
  'ce-connectionid',
  'ce-eventname',
];
const verificationKey = createSecretKey(Buffer.from(ACCESS_KEY, 'utf8'));
const SIGNATURE_PREFIX = 'sha256=';

function signatureMatches(connectionId: string, header: string | string[] | undefined): boolean {
  if (typeof header !== 'string') return false;
  const expected = createHmac('sha256', verificationKey).update(connectionId).digest();
  // The service may send one value per access key, comma-separated.
  for (const value of header.split(',')) {
    const trimmed = value.trim();
    if (!trimmed.startsWith(SIGNATURE_PREFIX)) continue;
    const candidate = Buffer.from(trimmed.slice(SIGNATURE_PREFIX.length), 'hex');
    if (candidate.length === expected.length && timingSafeEqual(candidate, expected)) return true;
  }
  return false;
}

/**
 * The HTTP status an upstream request must be refused with, or 0 when it may be handled:
 * required CloudEvents headers, spec version, hub and the `ce-signature` HMAC.
 */
export function upstreamRefusal(headers: IncomingHttpHeaders): number {
  for (const name of REQUIRED_HEADERS) if (!headers[name]) return 400;
  if (headers['ce-specversion'] !== '1.0') return 400;
  if (String(headers['ce-hub']).toLowerCase() !== HUB) return 404;
  return signatureMatches(String(headers['ce-connectionid']), headers['ce-signature']) ? 0 : 401;
}

/** What a request's `ce-type` asks for, as the hand-written servers route it. */
export function requestedWork(headers: IncomingHttpHeaders): 'echo' | 'validated' | 'connect' {
  const type = headers['ce-type'];
  if (type === 'azure.webpubsub.sys.connect') return 'connect';
  return type === 'azure.webpubsub.user.validated' ? 'validated' : 'echo';
}

/** The hand-written equivalent of the DTO's decorators, for the bare node:http server. */
export function isChatMessage(value: unknown): value is ChatMessageDto {
  if (typeof value !== 'object' || value === null) return false;
  const { text, sequence, tags } = value as Record<string, unknown>;
  return (
    typeof text === 'string' &&
    text.length <= 500 &&
    Number.isInteger(sequence) &&
    (sequence as number) >= 0 &&
    (tags === undefined || (Array.isArray(tags) && tags.every((tag) => typeof tag === 'string')))
  );
}

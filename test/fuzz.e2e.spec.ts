/**
 * Property-based robustness tests over the HTTP surface of a real app (Express and Fastify):
 * valid signed events, and mutations of them (headers dropped, duplicated, oversized, re-cased or
 * garbled; wrong or foreign signatures; malformed connection states; truncated, non-UTF-8,
 * non-JSON, huge and over-limit bodies; other methods and paths; abuse-protection probes).
 *
 * Every request is sent with node:http on a keep-alive agent, one at a time, so the handler calls
 * made while it was in flight belong to it. Properties checked for each request:
 * - it is answered within ANSWER_WITHIN_MS;
 * - no 5xx unless a handler threw (the fixture's `boom` handlers, and only they, throw);
 * - a handler runs only for a POST under the upstream path whose `ce-signature` holds a valid
 *   signature of its `ce-connectionId` under a configured key, and an unsigned or wrongly signed
 *   POST is never answered 2xx;
 * - every 4xx is JSON with a `message`, and no body carries a stack trace or a file path;
 * - an upstream POST is never refused for its content type (415): the module reads it raw;
 * - a valid request, also after mutations that must not change its meaning (header name case,
 *   key rotation, a malformed connection state…), gets the answer of the README's status table;
 * - no prototype pollution; afterwards the app still answers and no unhandled error happened.
 *
 * FUZZ_SEED changes the seed (default fixed, so CI is reproducible); FUZZ_RUNS the runs per
 * adapter. fast-check prints the seed and path of a failure: FUZZ_SEED=<seed> FUZZ_PATH=<path>
 * replays it.
 */
import { createHmac } from 'node:crypto';
import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import type { Type } from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeConnectionState } from 'nestjs-web-pubsub';
import { createEventHeaders } from 'nestjs-web-pubsub/testing';
import {
  FUZZ_HUB,
  FuzzModule,
  FuzzNoSignatureCheckModule,
  FuzzWrongKeyModule,
  fuzzLog,
} from './robustness-fixtures.js';
import { ADAPTERS, KEY, SECONDARY_KEY, startApp, type RunningApp } from './upstream-helpers.js';

const RUNS_PER_ADAPTER = Number(process.env.FUZZ_RUNS ?? 5_000);
const SEED = Number(process.env.FUZZ_SEED ?? 20_260_604);
const ANSWER_WITHIN_MS = 5_000;
/** The module's default `maxBodySize`. */
const MAX_BODY = 1024 * 1024;
/** A key the app does not know. */
const OTHER_KEY = 'another-resource-key-0123456789abcdefghijkl';
const CONFIGURED_KEYS = [KEY, SECONDARY_KEY];
const UPSTREAM = '/eventhandler';

// ---------------------------------------------------------------------------------------------
// The request model

type Header = [name: string, value: string];

/** A request being built: the raw header lines (order kept, duplicates allowed) and the body. */
interface Draft {
  method: string;
  path: string;
  headers: Header[];
  body: Buffer;
  /** The event the request started as. */
  event: string;
  userEvent: boolean;
  connectionId: string;
  /** The answer the unmutated request must get. */
  expected: number;
}

interface Mutation {
  /** Returns a description, and whether the request must still get its original answer. */
  apply(draft: Draft): { what: string; preserves: boolean };
}

/** What is sent, and what is known of the answer in advance. */
interface Case {
  method: string;
  path: string;
  headers: Header[];
  body: Buffer;
  mutations: string[];
  /** The exact status this request must get, when it is known. */
  expected?: number;
  /** Probes: the `WebHook-Allowed-Origin` a 200 must carry. */
  allowedOrigin?: string;
}

const short = (value: string, max = 120) =>
  value.length > max ? `${value.slice(0, max)}…(${value.length} chars)` : value;

/** A compact description of a request for fast-check's failure report. */
function describeCase(c: Case): string {
  const lines = c.headers.map(([name, value]) => `  ${name}: ${JSON.stringify(short(value))}`);
  const body = c.body.toString('latin1');
  return [
    `${c.method} ${short(c.path)}`,
    ...lines,
    `  body (${c.body.length} bytes): ${JSON.stringify(short(body, 300))}`,
    `  mutations: ${c.mutations.join('; ') || 'none'}`,
    `  expected: ${c.expected ?? 'any non-5xx'}`,
  ].join('\n');
}

const hmac = (key: string, connectionId: string) =>
  createHmac('sha256', Buffer.from(key, 'utf8')).update(connectionId, 'utf8').digest('hex');

/** Headers Node keeps only the first of when they are repeated; others are joined with ", ". */
const SINGLE_VALUED = new Set(['content-type', 'content-length', 'host', 'authorization']);

/** Node trims spaces and tabs (only those) around a header value. */
const owsTrim = (value: string) => value.replace(/^[ \t]+|[ \t]+$/g, '');

/** The headers as the server sees them: names lower-cased, values trimmed, repeats joined. */
function serverView(headers: readonly Header[]): Record<string, string> {
  const view: Record<string, string> = {};
  for (const [name, raw] of headers) {
    const key = name.toLowerCase();
    const value = owsTrim(raw);
    if (!(key in view)) view[key] = value;
    else if (!SINGLE_VALUED.has(key)) view[key] += `, ${value}`;
  }
  return view;
}

/** True when `ce-signature` holds a valid signature of `ce-connectionId` under a configured key. */
function isAuthentic(view: Record<string, string>): boolean {
  const connectionId = view['ce-connectionid'];
  const signature = view['ce-signature'];
  if (!connectionId || !signature) return false;
  const entries = signature.split(/[\s,]+/).map((entry) => entry.toLowerCase());
  return CONFIGURED_KEYS.some((key) => entries.includes(`sha256=${hmac(key, connectionId)}`));
}

const pathname = (path: string) => path.split(/[?#]/)[0]!;
/** A path both adapters route to the upstream controller. */
const strictlyUpstream = (path: string) =>
  /^\/eventhandler(\/[A-Za-z0-9._~-]*)*$/.test(pathname(path));
/** A path the module may treat as upstream at all: the path as a whole segment, any case. */
const looselyUpstream = (path: string) => /\/eventhandler(\/|$)/i.test(pathname(path));

const headerBytes = (c: Case) =>
  c.path.length +
  c.headers.reduce((size, [name, value]) => size + name.length + value.length + 4, 64);

/** Node's own limit for the header section (16 KiB): beyond it Node answers 431 by itself. */
const NODE_HEADER_LIMIT = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// Generators

/** Characters Node lets a client put in a header value. */
const headerChar = fc
  .oneof(
    { weight: 8, arbitrary: fc.integer({ min: 0x20, max: 0x7e }) },
    { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
    { weight: 1, arbitrary: fc.constant(0x09) },
  )
  .map((code) => String.fromCharCode(code));
const headerValue = (maxLength = 40) => fc.string({ unit: headerChar, maxLength });
const trimmedHeaderValue = (maxLength = 40) =>
  headerValue(maxLength)
    .map(owsTrim)
    .filter((value) => value.length > 0);

const connectionIdArb = fc.oneof(
  fc.uuid().map((id) => id.replaceAll('-', '')),
  fc.stringMatching(/^[A-Za-z0-9_=+/-]{1,48}$/),
  trimmedHeaderValue(60),
);

const RESERVED_EVENTS = ['echo', 'count', 'dto', 'boom', 'boomAsync'];
const userEventName = fc
  .stringMatching(/^[A-Za-z][A-Za-z0-9_.-]{0,19}$/)
  .filter((name) => !RESERVED_EVENTS.includes(name));

interface BaseEvent {
  event: string;
  kind: 'connect' | 'connected' | 'disconnected' | 'groupJoined' | 'groupLeft' | 'user';
  contentType?: string;
  body: Buffer;
  expected: number;
}

const json = (value: unknown) => Buffer.from(JSON.stringify(value), 'utf8');
const stringArrayMap = fc.dictionary(
  fc.string({ maxLength: 10 }),
  fc.array(fc.string({ maxLength: 10 }), { maxLength: 3 }),
  { maxKeys: 3 },
);

const baseEventArb: fc.Arbitrary<BaseEvent> = fc.oneof(
  fc
    .record({ query: stringArrayMap, claims: stringArrayMap, subprotocols: fc.array(fc.string()) })
    .map((request) => ({
      event: 'connect',
      kind: 'connect' as const,
      body: json({ ...request, headers: {}, clientCertificates: [] }),
      expected: 200,
    })),
  fc.constant({ event: 'connect', kind: 'connect' as const, body: Buffer.alloc(0), expected: 200 }),
  fc.constant({ event: 'connected', kind: 'connected' as const, body: json({}), expected: 204 }),
  fc.option(fc.string()).map((reason) => ({
    event: 'disconnected',
    kind: 'disconnected' as const,
    body: json({ reason }),
    expected: 204,
  })),
  fc.tuple(fc.constantFrom('joined', 'left'), fc.string()).map(([event, group]) => ({
    event,
    kind: event === 'joined' ? ('groupJoined' as const) : ('groupLeft' as const),
    body: json({ group }),
    expected: 204,
  })),
  fc.string({ unit: 'grapheme', maxLength: 200 }).map((text) => ({
    event: 'echo',
    kind: 'user' as const,
    contentType: 'text/plain',
    body: Buffer.from(text, 'utf8'),
    expected: 200,
  })),
  fc.jsonValue({ maxDepth: 3 }).map((value) => ({
    event: 'echo',
    kind: 'user' as const,
    contentType: 'application/json',
    body: json(value),
    expected: 200,
  })),
  fc.uint8Array({ maxLength: 300 }).map((bytes) => ({
    event: 'echo',
    kind: 'user' as const,
    contentType: 'application/octet-stream',
    body: Buffer.from(bytes),
    expected: 200,
  })),
  fc.constant({
    event: 'count',
    kind: 'user' as const,
    contentType: 'application/json',
    body: json(null),
    expected: 200,
  }),
  fc.record({ text: fc.string({ maxLength: 20 }), n: fc.integer() }).map((dto) => ({
    event: 'dto',
    kind: 'user' as const,
    contentType: 'application/json',
    body: json(dto),
    expected: 200,
  })),
  fc
    .oneof(
      fc.record({ text: fc.string({ minLength: 21, maxLength: 40 }), n: fc.integer() }),
      fc.record({ text: fc.integer(), n: fc.string() }),
      fc.constant({}),
    )
    .map((dto) => ({
      event: 'dto',
      kind: 'user' as const,
      contentType: 'application/json',
      body: json(dto),
      expected: 400,
    })),
  fc.constantFrom('boom', 'boomAsync').map((event) => ({
    event,
    kind: 'user' as const,
    contentType: 'text/plain',
    body: Buffer.from('trigger', 'utf8'),
    expected: 500,
  })),
  userEventName.map((event) => ({
    event,
    kind: 'user' as const,
    contentType: 'text/plain; charset=utf-8',
    body: Buffer.from('hi', 'utf8'),
    expected: 200,
  })),
);

/** Which keys the sender signs with: every variant holds one configured key. */
const signingKeysArb = fc.constantFrom(
  [KEY],
  [SECONDARY_KEY],
  [KEY, SECONDARY_KEY],
  [OTHER_KEY, SECONDARY_KEY],
);

const validStateArb = fc
  .dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 })
  .map((states) => encodeConnectionState(states));

const draftArb: fc.Arbitrary<Draft> = fc
  .record({
    base: baseEventArb,
    connectionId: connectionIdArb,
    keys: signingKeysArb,
    eventId: fc.nat(),
    userId: fc.option(trimmedHeaderValue(20), { nil: undefined }),
    state: fc.option(validStateArb, { nil: undefined }),
    subprotocol: fc.option(fc.constantFrom('json.webpubsub.azure.v1', 'custom'), {
      nil: undefined,
    }),
  })
  .map(({ base, connectionId, keys, eventId, userId, state, subprotocol }) => {
    const headers = createEventHeaders({
      hub: FUZZ_HUB,
      connectionId,
      kind: base.kind,
      event: base.kind === 'user' ? base.event : undefined,
      accessKeys: keys,
      userId,
      subprotocol: base.kind === 'connect' ? undefined : subprotocol,
      connectionState: state,
      eventId,
      contentType: base.contentType,
    });
    return {
      method: 'POST',
      path: UPSTREAM,
      headers: Object.entries(headers),
      body: base.body,
      event: base.event,
      userEvent: base.kind === 'user',
      connectionId,
      expected: base.expected,
    };
  });

const headerIndex = (draft: Draft, index: number) => index % Math.max(draft.headers.length, 1);
const setHeader = (draft: Draft, name: string, value: string | undefined) => {
  draft.headers = draft.headers.filter(([n]) => n.toLowerCase() !== name);
  if (value !== undefined) draft.headers.push([name, value]);
};

const mutation = (arb: fc.Arbitrary<Mutation['apply']>): fc.Arbitrary<Mutation> =>
  arb.map((apply) => ({ apply }));

const headerMutations = [
  mutation(
    fc.nat().map((i) => (d: Draft) => {
      if (!d.headers.length) return { what: 'drop a header (none left)', preserves: false };
      const [[name]] = d.headers.splice(headerIndex(d, i), 1) as [Header];
      return { what: `drop ${name}`, preserves: false };
    }),
  ),
  mutation(
    fc
      .tuple(fc.nat(), fc.option(headerValue(), { nil: undefined }))
      .map(([i, other]) => (d: Draft) => {
        if (!d.headers.length) return { what: 'duplicate (no header)', preserves: false };
        const [name, value] = d.headers[headerIndex(d, i)]!;
        d.headers.push([name, other ?? value]);
        return { what: `duplicate ${name}`, preserves: false };
      }),
  ),
  mutation(
    fc
      .tuple(
        fc.nat(),
        fc.oneof(
          { weight: 6, arbitrary: fc.integer({ min: 500, max: 4_000 }) },
          { weight: 3, arbitrary: fc.integer({ min: 8_000, max: 12_000 }) },
          { weight: 1, arbitrary: fc.constant(64 * 1024) },
        ),
      )
      .map(([i, size]) => (d: Draft) => {
        if (!d.headers.length) return { what: 'oversize (no header)', preserves: false };
        const header = d.headers[headerIndex(d, i)]!;
        header[1] += 'x'.repeat(size);
        return { what: `${header[0]} +${size} bytes`, preserves: false };
      }),
  ),
  mutation(
    fc.array(fc.boolean(), { minLength: 1, maxLength: 24 }).map((flips) => (d: Draft) => {
      d.headers = d.headers.map(([name, value]) => [
        [...name]
          .map((char, i) => (flips[i % flips.length] ? char.toUpperCase() : char.toLowerCase()))
          .join(''),
        value,
      ]);
      return { what: 'header names re-cased', preserves: true };
    }),
  ),
  mutation(
    fc.nat().map((i) => (d: Draft) => {
      if (!d.headers.length) return { what: 'empty (no header)', preserves: false };
      const header = d.headers[headerIndex(d, i)]!;
      header[1] = '';
      return { what: `${header[0]} emptied`, preserves: false };
    }),
  ),
  mutation(
    fc
      .oneof(
        headerValue(),
        fc.constantFrom('-1', '1e3', '0x10', 'NaN', '', ' ', '99999999999999999999999999', '1.5'),
      )
      .map((value) => (d: Draft) => {
        setHeader(d, 'ce-id', value);
        // The module passes ce-id through: a non-numeric one is not its business to refuse.
        return { what: `ce-id=${JSON.stringify(value)}`, preserves: false };
      }),
  ),
  mutation(
    fc
      .oneof(
        headerValue(),
        fc.constantFrom(
          'azure.webpubsub.user.',
          'azure.webpubsub.sys.unknown',
          'AZURE.WEBPUBSUB.SYS.CONNECT',
          'azure.webpubsub.sys.connect.extra',
          'azure.webpubsub.gp.joined',
          'azure.webpubsub.user.boom',
          'azure.webpubsub.user.__proto__',
          'azure.webpubsub.user.constructor',
          'azure.webpubsub.sys.toString',
          'com.example.other',
        ),
      )
      .map((value) => (d: Draft) => {
        setHeader(d, 'ce-type', value);
        return { what: `ce-type=${JSON.stringify(value)}`, preserves: false };
      }),
  ),
  mutation(
    fc
      .oneof(headerValue(8), fc.constantFrom('0.3', '1', '1.0.0', '2.0'))
      .map((value) => (d: Draft) => {
        setHeader(d, 'ce-specversion', value);
        return { what: `ce-specversion=${JSON.stringify(value)}`, preserves: value === '1.0' };
      }),
  ),
  mutation(
    fc
      .oneof(
        fc.constantFrom('FUZZ', 'Fuzz', 'chat', 'fuzz2', '__proto__', 'constructor', 'toString'),
        headerValue(20),
      )
      .map((value) => (d: Draft) => {
        setHeader(d, 'ce-hub', value);
        return {
          what: `ce-hub=${JSON.stringify(value)}`,
          preserves: owsTrim(value).toLowerCase() === FUZZ_HUB,
        };
      }),
  ),

  mutation(
    fc
      .oneof(
        headerValue(80).map((value) => ({ value, preserves: false, what: 'random' })),
        fc
          .stringMatching(/^[0-9a-f]{64}$/)
          .map((hex) => ({ value: `sha256=${hex}`, preserves: false, what: 'random sha256' })),
        connectionIdArb.map((other) => ({
          value: `sha256=${hmac(KEY, other)}`,
          preserves: false,
          what: `signature of connection ${JSON.stringify(other)}`,
        })),
        fc.constantFrom(
          'other key',
          'base64-decoded key',
          'upper-case hex',
          'truncated',
          'one digit too many',
          'sha1 prefix',
          'space after sha256=',
          'lower-case SHA256= prefix swapped',
        ),
        fc.tuple(headerValue(30), fc.boolean()).map(([garbage, first]) => ({ garbage, first })),
      )
      .map((variant) => (d: Draft) => {
        const id = d.connectionId;
        const valid = hmac(KEY, id);
        let value: string;
        let preserves = false;
        let what: string;
        if (typeof variant === 'string') {
          what = variant;
          value = {
            'other key': `sha256=${hmac(OTHER_KEY, id)}`,
            'base64-decoded key': `sha256=${createHmac('sha256', Buffer.from(KEY, 'base64')).update(id).digest('hex')}`,
            'upper-case hex': `sha256=${valid.toUpperCase()}`,
            truncated: `sha256=${valid.slice(0, 63)}`,
            'one digit too many': `sha256=${valid}0`,
            'sha1 prefix': `sha1=${valid}`,
            'space after sha256=': `sha256= ${valid}`,
            'lower-case SHA256= prefix swapped': `SHA256=${valid}`,
          }[variant];
          preserves =
            variant === 'upper-case hex' || variant === 'lower-case SHA256= prefix swapped';
        } else if ('garbage' in variant) {
          // A valid entry among garbage: key rotation sends several, any match is enough.
          value = variant.first
            ? `${variant.garbage},sha256=${valid}`
            : `sha256=${valid} ${variant.garbage}`;
          preserves = true;
          what = 'valid entry among garbage';
        } else {
          ({ value, preserves, what } = variant);
        }
        setHeader(d, 'ce-signature', value);
        return { what: `ce-signature: ${what}`, preserves };
      }),
  ),
  mutation(
    fc
      .oneof(
        fc.constantFrom('!!!', 'not base64', '%%%', 'e30', 'e30=====', '====', 'YQ', '=', '{}'),
        fc
          .constantFrom(
            'not json',
            '[1,2]',
            '42',
            'null',
            '"text"',
            'true',
            '{"n":"x"}',
            '{"n":1e308}',
            '{"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}}}',
            '['.repeat(3000) + ']'.repeat(3000),
          )
          .map((text) => Buffer.from(text, 'utf8').toString('base64')),
        fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes).toString('base64')),
        headerValue(60),
        fc
          .constantFrom(8_000, 64 * 1024)
          .map((size) => encodeConnectionState({ pad: 'x'.repeat(size) })),
      )
      .map((value) => (d: Draft) => {
        setHeader(d, 'ce-connectionstate', value);
        // A malformed state is ignored (with a warning): the event is handled as usual.
        return { what: `ce-connectionState=${JSON.stringify(short(value, 40))}`, preserves: true };
      }),
  ),
  mutation(
    fc
      .oneof(
        fc.constantFrom(
          undefined,
          '',
          'text/plain',
          'application/json',
          'application/octet-stream',
          'application/cloudevents+json',
          'application/x-www-form-urlencoded',
          'multipart/form-data; boundary=x',
          'text/plain; charset=latin1',
          'application/json; charset=utf-16',
          'APPLICATION/JSON',
          'text/',
          ';',
        ),
        headerValue(40),
      )
      .map((value) => (d: Draft) => {
        setHeader(d, 'content-type', value);
        // Only user events are decoded by their content type.
        return { what: `content-type=${JSON.stringify(value)}`, preserves: !d.userEvent };
      }),
  ),
  mutation(
    originArb().map((value) => (d: Draft) => {
      setHeader(d, 'webhook-request-origin', value);
      return { what: `origin=${JSON.stringify(value)}`, preserves: true };
    }),
  ),
  mutation(
    fc
      .tuple(fc.stringMatching(/^x-[a-z0-9-]{1,20}$/), headerValue(60))
      .map(([name, value]) => (d: Draft) => {
        d.headers.push([name, value]);
        return { what: `extra header ${name}`, preserves: true };
      }),
  ),
];

function originArb(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constantFrom(
      'localhost',
      'LOCALHOST',
      'localhost:8080',
      'evil.example.com, localhost',
      'evil.example.com',
      'a.webpubsub.azure.com',
      ' ',
      ',,,',
      'localhost.evil.com',
      'evil.com/localhost',
      'http://localhost',
      'localhost,localhost',
      '*',
      'localhost\t, x',
    ),
    headerValue(60),
    fc
      .array(fc.oneof(fc.domain(), fc.constant('localhost')), { maxLength: 4 })
      .map((hosts) => hosts.join(', ')),
  );
}

const INVALID_UTF8 = [[0xff], [0xc0, 0xaf], [0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80]];

const bodyMutations = [
  mutation(
    fc.nat().map((n) => (d: Draft) => {
      const at = n % (d.body.length + 1);
      const preserves = at === d.body.length;
      d.body = d.body.subarray(0, at);
      return { what: `body truncated to ${at} bytes`, preserves };
    }),
  ),
  mutation(
    fc.uint8Array({ maxLength: 500 }).map((bytes) => (d: Draft) => {
      d.body = Buffer.from(bytes);
      return { what: 'random body', preserves: false };
    }),
  ),
  mutation(
    fc.tuple(fc.nat(), fc.constantFrom(...INVALID_UTF8)).map(([n, bytes]) => (d: Draft) => {
      const at = n % (d.body.length + 1);
      d.body = Buffer.concat([d.body.subarray(0, at), Buffer.from(bytes), d.body.subarray(at)]);
      return { what: `invalid UTF-8 at ${at}`, preserves: false };
    }),
  ),
  mutation(
    fc
      .constantFrom(
        'append }',
        'prepend {',
        '{"a":',
        'NaN',
        "{'a':1}",
        '[1,]',
        '\u0000',
        '{"a":1}{}',
      )
      .map((variant) => (d: Draft) => {
        if (variant === 'append }') d.body = Buffer.concat([d.body, Buffer.from('}')]);
        else if (variant === 'prepend {') d.body = Buffer.concat([Buffer.from('{'), d.body]);
        else d.body = Buffer.from(variant, 'utf8');
        return { what: `invalid JSON (${variant})`, preserves: false };
      }),
  ),
];

/** Large bodies, used sparingly: under the limit (must work like a small one) and over it (413). */
const sizeMutations = [
  mutation(
    fc.integer({ min: 100_000, max: MAX_BODY - 4_096 }).map((size) => (d: Draft) => {
      // Whitespace after JSON or text changes nothing, nor a pad key in an object.
      if (d.body.length === 0) d.body = Buffer.from('{}');
      let parsed: unknown;
      try {
        parsed = JSON.parse(d.body.toString('utf8'));
      } catch {
        parsed = undefined;
      }
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed) && !('pad' in parsed)) {
        d.body = json({ ...parsed, pad: 'x'.repeat(size) });
      } else {
        d.body = Buffer.concat([d.body, Buffer.alloc(size, ' ')]);
      }
      return { what: `body padded to ${d.body.length} bytes`, preserves: true };
    }),
  ),
  mutation(
    fc.integer({ min: 1, max: 64 * 1024 }).map((extra) => (d: Draft) => {
      d.body = Buffer.alloc(MAX_BODY + extra, 'x');
      return { what: `body of ${d.body.length} bytes (over the limit)`, preserves: false };
    }),
  ),
];

const PRESERVING_PATHS = [
  '/eventhandler/',
  '/eventhandler/fuzz',
  '/eventhandler/fuzz/connect',
  '/eventhandler?code=abc',
  '/eventhandler/validate?x=1&y',
  // Not valid in a request target, but both routers take it for the path without the fragment.
  '/eventhandler#x',
  '/eventhandler?code=abc#x',
];
const OTHER_PATHS = [
  '/eventhandlerx',
  '/eventhandle',
  '/',
  '/api/eventhandler',
  '/EventHandler',
  '/EVENTHANDLER/x',
  '//eventhandler',
  '/eventhandler//x',
  '/eventhandler/%2e%2e/x',
  '/eventhandler%2Fx',
  '/eventhandler/%E0%A4%A',
  '/eventhandler/%',
  '/eventhandler/%00',
  '/eventhandler/%FF%FE',
  '/x/../eventhandler',
  '/eventhandler/../../etc/passwd',
  '/eventhandler;x',
  '/eventhandler/*',
  '/eventhandler/:id',
  '*',
  '/favicon.ico',
];

const requestMutations = [
  mutation(
    fc.constantFrom('GET', 'PUT', 'OPTIONS', 'DELETE', 'PATCH').map((method) => (d: Draft) => {
      d.method = method;
      return { what: `method ${method}`, preserves: false };
    }),
  ),
  mutation(
    fc
      .oneof(
        fc.constantFrom(...PRESERVING_PATHS),
        fc.constantFrom(...OTHER_PATHS),
        fc.stringMatching(/^(\/[A-Za-z0-9._~%:;@!$&'()*+,=-]{0,12}){1,4}$/),
        fc
          .stringMatching(/^(\/[A-Za-z0-9._~%:;@!$&'()*+,=-]{0,12}){1,3}$/)
          .map((rest) => UPSTREAM + rest),
      )
      .map((path) => (d: Draft) => {
        d.path = path;
        return { what: `path ${path}`, preserves: PRESERVING_PATHS.includes(path) };
      }),
  ),
  mutation(
    fc
      .record({
        origin: fc.option(originArb(), { nil: undefined }),
        awps: fc.boolean(),
        path: fc.constantFrom(UPSTREAM, `${UPSTREAM}/validate`, `${UPSTREAM}/fuzz/validate`),
      })
      .map(({ origin, awps, path }) => (d: Draft) => {
        d.method = 'OPTIONS';
        d.path = path;
        d.body = Buffer.alloc(0);
        d.headers = [];
        if (origin !== undefined) d.headers.push(['WebHook-Request-Origin', origin]);
        if (awps) d.headers.push(['ce-awpsversion', '1.0']);
        return { what: `abuse-protection probe from ${JSON.stringify(origin)}`, preserves: false };
      }),
  ),
];

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  ...headerMutations.map((arbitrary) => ({ weight: 4, arbitrary })),
  ...bodyMutations.map((arbitrary) => ({ weight: 4, arbitrary })),
  ...requestMutations.map((arbitrary) => ({ weight: 4, arbitrary })),
  ...sizeMutations.map((arbitrary) => ({ weight: 1, arbitrary })),
);

/** The hosts the probe oracle allows: the endpoint's host, ports ignored. */
function expectedProbe(view: Record<string, string>): { status: number; allowed?: string } {
  const origins = (view['webhook-request-origin'] ?? '')
    .split(/[\s,]+/)
    .map((host) => host.toLowerCase())
    .filter(Boolean);
  const allowed = origins.find((host) => host.replace(/:\d+$/, '') === 'localhost');
  return allowed ? { status: 200, allowed } : { status: 400 };
}

function build(draft: Draft, applied: Array<{ what: string; preserves: boolean }>): Case {
  const c: Case = {
    method: draft.method,
    path: draft.path,
    headers: draft.headers,
    body: draft.body,
    mutations: applied.map((m) => m.what),
  };
  const size = headerBytes(c);
  if (size > NODE_HEADER_LIMIT + 4_096) c.expected = 431;
  else if (size > NODE_HEADER_LIMIT - 4_096) c.expected = undefined;
  else if (c.method === 'OPTIONS') {
    // The probe is answered whatever else it carries (a body, any content type).
    if (strictlyUpstream(c.path)) {
      const probe = expectedProbe(serverView(c.headers));
      c.expected = probe.status;
      c.allowedOrigin = probe.allowed;
    }
  } else if (c.method === 'POST' && strictlyUpstream(c.path)) {
    if (c.body.length > MAX_BODY) c.expected = 413;
    else if (applied.every((m) => m.preserves)) c.expected = draft.expected;
  }
  Object.defineProperty(c, fc.toStringMethod, { value: () => describeCase(c) });
  return c;
}

const caseArb: fc.Arbitrary<Case> = fc
  .tuple(
    draftArb,
    fc.oneof(
      { weight: 1, arbitrary: fc.constant([]) },
      { weight: 5, arbitrary: fc.array(mutationArb, { minLength: 1, maxLength: 3 }) },
    ),
  )
  .map(([draft, mutations]) => {
    const copy: Draft = { ...draft, headers: draft.headers.map(([n, v]) => [n, v]) };
    const applied = mutations.map((m) => m.apply(copy));
    return build(copy, applied);
  });

// ---------------------------------------------------------------------------------------------
// Sending and checking

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

class PropertyViolation extends Error {
  override name = 'PropertyViolation';
}
const violated = (property: string, detail: string): never => {
  throw new PropertyViolation(`${property}: ${detail}`);
};

/** Sends one request as given (header lines in order, repeats and case kept). */
function send(url: URL, agent: Agent, c: Case): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const lines: Header[] = [
      ...c.headers,
      ['Host', url.host],
      ['Content-Length', String(c.body.length)],
    ];
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        method: c.method,
        path: c.path,
        agent,
        headers: lines.flat(),
        signal: AbortSignal.timeout(ANSWER_WITHIN_MS),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(c.body);
  });
}

/** Markers of a stack trace or a server path; fuzzed input never contains them. */
const LEAKS = [
  process.cwd(),
  'node_modules',
  'node:internal',
  '/srv/app/secret',
  'BoomError',
  'boom in',
];
const STACK_FRAME = /\n\s+at [^\n]*[(:]/;

interface Agents {
  keepAlive: Agent;
  fresh: Agent;
}

interface Stats {
  sent: number;
  /** Requests refused early whose connection was reset while they were being sent. */
  resets: number;
  byStatus: Map<number, number>;
  handled: number;
  exact: number;
}

const newStats = (): Stats => ({ sent: 0, resets: 0, byStatus: new Map(), handled: 0, exact: 0 });

async function check(url: URL, agents: Agents, c: Case, stats: Stats) {
  const view = serverView(c.headers);
  const callsBefore = fuzzLog.invocations.length;
  const throwsBefore = fuzzLog.throws;
  // Node and the module may close the connection on a request they refuse early (431, 413):
  // such requests go on a connection of their own, and a reset while sending them counts as
  // the refusal it is.
  const refusedEarly = c.body.length > MAX_BODY || headerBytes(c) > NODE_HEADER_LIMIT - 4_096;
  let answer: Answer;
  try {
    answer = await send(url, refusedEarly ? agents.fresh : agents.keepAlive, c);
  } catch (err) {
    const { name, code } = err as Error & { code?: string };
    if (name === 'AbortError' || name === 'TimeoutError') {
      return violated('no hang', `no answer within ${ANSWER_WITHIN_MS} ms`);
    }
    if (refusedEarly && (code === 'ECONNRESET' || code === 'EPIPE')) {
      stats.sent++;
      stats.resets++;
      if (fuzzLog.invocations.length > callsBefore) {
        violated('authenticity', 'a handler ran for a request refused early');
      }
      return;
    }
    return violated('answered', `the request failed: ${(err as Error).message}`);
  }
  stats.sent++;
  stats.byStatus.set(answer.status, (stats.byStatus.get(answer.status) ?? 0) + 1);
  const calls = fuzzLog.invocations.slice(callsBefore);
  const threw = fuzzLog.throws - throwsBefore;
  const text = answer.body.toString('utf8');

  // Handlers run only for authentic POSTs to the upstream path, for the connection signed.
  for (const call of calls) {
    if (c.method !== 'POST' || !looselyUpstream(c.path) || !isAuthentic(view)) {
      violated(
        'authenticity',
        `handler ${call.handler} ran for a request that is not an authentic POST to the upstream path`,
      );
    }
    if (call.connectionId !== view['ce-connectionid']) {
      violated('authenticity', `handler ${call.handler} ran for connection ${call.connectionId}`);
    }
  }
  stats.handled += calls.length;
  if (c.method === 'POST' && !isAuthentic(view) && answer.status < 400) {
    violated('authenticity', `an unauthenticated POST was answered ${answer.status}`);
  }

  if (c.method === 'POST' && looselyUpstream(c.path) && answer.status === 415) {
    violated('raw bodies', `an upstream POST was refused for its content type: ${short(text)}`);
  }

  if (answer.status >= 500) {
    if (threw === 0)
      violated('no 5xx', `${answer.status} without a handler throwing: ${short(text)}`);
    if (answer.status !== 500 || JSON.parse(text).message !== 'Internal server error') {
      violated('no 5xx', `a throwing handler was answered ${answer.status} ${short(text)}`);
    }
  }

  for (const leak of LEAKS) {
    if (text.includes(leak))
      violated('no leak', `the body contains "${leak}": ${short(text, 400)}`);
  }
  if (STACK_FRAME.test(text))
    violated('no leak', `the body holds a stack frame: ${short(text, 400)}`);

  if (answer.status >= 400 && answer.status < 500) {
    if (answer.status === 431 && answer.body.length === 0) {
      // Node's HTTP parser refused the header section before the app saw it.
      if (calls.length) violated('authenticity', 'a handler ran for a 431 request');
    } else {
      if (!String(answer.headers['content-type']).startsWith('application/json')) {
        violated(
          'JSON errors',
          `${answer.status} with content-type ${answer.headers['content-type']}: ${short(text)}`,
        );
      }
      let message: unknown;
      try {
        message = (JSON.parse(text) as { message?: unknown }).message;
      } catch {
        violated('JSON errors', `${answer.status} body is not JSON: ${short(text)}`);
      }
      const ok =
        (typeof message === 'string' && message.length > 0) ||
        (Array.isArray(message) && message.every((m) => typeof m === 'string'));
      if (!ok) violated('JSON errors', `${answer.status} body has no message: ${short(text)}`);
    }
  }

  if (c.expected !== undefined) {
    stats.exact++;
    if (answer.status !== c.expected) {
      violated('status table', `expected ${c.expected}, got ${answer.status}: ${short(text, 300)}`);
    }
    if (c.method === 'OPTIONS' && c.expected === 200) {
      const allowed = answer.headers['webhook-allowed-origin'];
      if (allowed !== c.allowedOrigin) {
        violated('abuse protection', `WebHook-Allowed-Origin ${String(allowed)}`);
      }
    }
  }

  const probe = {} as Record<string, unknown>;
  if (
    probe.polluted !== undefined ||
    Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted')
  ) {
    violated('no prototype pollution', 'Object.prototype.polluted is set');
  }
}

/** Runs the properties against one app; returns fast-check's report. */
async function fuzz(url: string, stats: Stats, parameters: fc.Parameters<[Case]>) {
  const agents = {
    keepAlive: new Agent({ keepAlive: true, maxSockets: 1 }),
    fresh: new Agent({ keepAlive: false }),
  };
  const target = new URL(url);
  try {
    return await fc.check(
      fc.asyncProperty(caseArb, (c) => check(target, agents, c, stats)),
      parameters,
    );
  } finally {
    agents.keepAlive.destroy();
    agents.fresh.destroy();
  }
}

// ---------------------------------------------------------------------------------------------

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

beforeAll(() => {
  process.on('unhandledRejection', onUnhandled);
  process.on('uncaughtException', onUnhandled);
});
afterAll(() => {
  process.off('unhandledRejection', onUnhandled);
  process.off('uncaughtException', onUnhandled);
});

describe.each(ADAPTERS)('fuzzing the upstream over %s', (adapter) => {
  let running: RunningApp;
  beforeAll(async () => {
    running = await startApp(FuzzModule, { adapter });
  });
  afterAll(() => running.close());

  it(`answers ${RUNS_PER_ADAPTER} generated and mutated requests by the properties`, async () => {
    const stats = newStats();
    const started = performance.now();
    const report = await fuzz(running.url, stats, {
      numRuns: RUNS_PER_ADAPTER,
      seed: SEED,
      path: process.env.FUZZ_PATH,
      interruptAfterTimeLimit: 100_000,
      markInterruptAsFailure: true,
    });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const statuses = [...stats.byStatus].sort(([a], [b]) => a - b);
    console.info(
      `[fuzz ${adapter}] ${stats.sent} requests in ${seconds} s, ${stats.handled} handler calls, ` +
        `${stats.exact} with a known answer, ${stats.resets} reset while refused; statuses ${statuses.map(([s, n]) => `${s}:${n}`).join(' ')}`,
    );
    if (report.failed) {
      const reason = (report.errorInstance as Error | undefined)?.message;
      throw new Error(`${reason}\n${fc.defaultReportMessage(report)}`);
    }
    expect(stats.sent).toBeGreaterThanOrEqual(RUNS_PER_ADAPTER);
    // The generator reaches every part of the status table, so it cannot quietly degrade.
    for (const status of [200, 204, 400, 401, 404, 413, 431, 500]) {
      expect(stats.byStatus.get(status) ?? 0, `answers with status ${status}`).toBeGreaterThan(0);
    }
    expect(stats.handled).toBeGreaterThan(RUNS_PER_ADAPTER / 10);
    expect(stats.exact).toBeGreaterThan(RUNS_PER_ADAPTER / 4);
  }, 120_000);

  // The two smallest cases the fuzzing found, kept as plain examples.
  it('answers the abuse-protection probe whatever Content-Type it carries', async () => {
    const answer = await send(new URL(running.url), new Agent(), {
      method: 'OPTIONS',
      path: UPSTREAM,
      headers: [
        ['WebHook-Request-Origin', 'localhost'],
        ['Content-Type', 'text/xml'],
      ],
      body: Buffer.alloc(0),
      mutations: [],
    });
    expect([answer.status, answer.headers['webhook-allowed-origin']]).toEqual([200, 'localhost']);
  });

  it('ignores a fragment in the request target, as the router does', async () => {
    const headers = createEventHeaders({
      hub: FUZZ_HUB,
      connectionId: 'fragment',
      kind: 'user',
      event: 'echo',
      accessKeys: [KEY],
      contentType: 'application/json',
    });
    const answer = await send(new URL(running.url), new Agent(), {
      method: 'POST',
      path: `${UPSTREAM}#x`,
      headers: Object.entries(headers),
      body: Buffer.from('"hello"'),
      mutations: [],
    });
    expect([answer.status, answer.body.toString()]).toEqual([
      200,
      JSON.stringify({ dataType: 'json', size: 5 }),
    ]);
  });

  it('still answers a valid request, and nothing went unhandled', async () => {
    const c: Case = {
      method: 'POST',
      path: UPSTREAM,
      headers: Object.entries(
        createEventHeaders({
          hub: FUZZ_HUB,
          connectionId: 'after-the-storm',
          kind: 'user',
          event: 'count',
          accessKeys: [KEY],
          contentType: 'application/json',
        }),
      ),
      body: Buffer.from('null'),
      mutations: [],
    };
    const agent = new Agent({ keepAlive: false });
    const answer = await send(new URL(running.url), agent, c);
    agent.destroy();
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body.toString())).toEqual({ n: 1 });
    expect(unhandled).toEqual([]);
  });
});

describe('the properties can fail', () => {
  const expectViolation = async (module: Type<unknown>, property: string) => {
    const running = await startApp(module);
    try {
      const report = await fuzz(running.url, newStats(), {
        numRuns: 500,
        seed: SEED,
        endOnFailure: true,
      });
      expect(report.failed).toBe(true);
      expect(String((report.errorInstance as Error | undefined)?.message)).toContain(property);
    } finally {
      await running.close();
    }
  };

  it('catches an app that runs handlers for unsigned requests', () =>
    expectViolation(FuzzNoSignatureCheckModule, 'authenticity'));

  it('catches an app that refuses valid requests', () =>
    expectViolation(FuzzWrongKeyModule, 'status table'));
});

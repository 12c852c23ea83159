import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  computeSignature,
  createSignatureVerifier,
  decodeConnectBody,
  decodeConnectionState,
  decodeHeaderText,
  encodeHeaderText,
  decodeUserEventBody,
  encodeConnectReply,
  encodeConnectionState,
  encodeUserEventReply,
  eventType,
  InvalidBodyError,
  normalizeAllowedEndpoint,
  parseConnectionString,
  parseEventType,
  parseRequestOrigins,
  resolveAllowedOrigin,
  signatureHeader,
  WebPubSubReply,
} from '../lib/web-pubsub.protocol.js';
import { createPathMatcher } from '../lib/web-pubsub.middleware.js';

const vectors = [
  [
    '7aab239577fd4f24bc919802fb629f5f',
    '0f9c97a2f0bf4706afe87a14e0797b11',
    'sha256=7767effcb3946f3e1de039df4b986ef02c110b1469d02c0a06f41b3b727ab561',
  ],
  [
    'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH',
    'conn1',
    'sha256=8de7281e588e23b0a30a7180ffa240257b8176e983004c240c9f3f7a7233c993',
  ],
  [
    'secondary-key-0123456789abcdef0123456789',
    'conn1',
    'sha256=ec27605ed03a1db09e6f813ac205a9fa30ea5a4e382e2e2c066f465ffccf56c7',
  ],
] as const;

describe('signatures', () => {
  it.each(vectors)('key %s, connection %s → %s', (key, connectionId, expected) => {
    expect(computeSignature(key, connectionId)).toBe(expected);
    expect(createSignatureVerifier([key])(connectionId, expected)).toBe(true);
  });

  it('rejects the signature made with the base64-decoded key', () => {
    const [key, connectionId] = vectors[1];
    const wrong =
      'sha256=' +
      createHmac('sha256', Buffer.from(key, 'base64')).update(connectionId).digest('hex');
    expect(wrong.startsWith('sha256=64ce71d7')).toBe(true);
    expect(wrong.endsWith('5c55')).toBe(true);
    expect(createSignatureVerifier([key])(connectionId, wrong)).toBe(false);
  });

  it('accepts any value under any key, ignores hex case, and splits on commas and spaces', () => {
    const [primary, ,] = vectors[1];
    const [secondary] = vectors[2];
    const verify = createSignatureVerifier([primary, secondary]);
    expect(verify('conn1', signatureHeader([secondary], 'conn1'))).toBe(true);
    expect(
      verify(
        'conn1',
        `sha256=${'0'.repeat(64)}, ${vectors[2][2].toUpperCase().replace('SHA256', 'sha256')}`,
      ),
    ).toBe(true);
    expect(verify('conn1', signatureHeader([primary, secondary], 'conn1'))).toBe(true);
  });

  it('rejects missing, malformed, foreign and other-connection signatures', () => {
    const verify = createSignatureVerifier([vectors[1][0]]);
    expect(verify('conn1', undefined)).toBe(false);
    expect(verify('conn1', '')).toBe(false);
    expect(verify('conn1', 'sha256=zz')).toBe(false);
    expect(verify('conn1', vectors[1][2].slice(0, -2))).toBe(false);
    expect(verify('conn2', vectors[1][2])).toBe(false);
    expect(verify('conn1', computeSignature('other-key', 'conn1'))).toBe(false);
    expect(createSignatureVerifier([])('conn1', vectors[1][2])).toBe(false);
  });
});

describe('connection strings', () => {
  it('parses endpoint, key and port like the SDK', () => {
    expect(
      parseConnectionString('Endpoint=http://localhost;Port=8080;AccessKey=abc==;Version=1.0;'),
    ).toEqual({ endpoint: 'http://localhost:8080', accessKey: 'abc==' });
    expect(parseConnectionString('endpoint=x.webpubsub.azure.com;accesskey=k;')).toEqual({
      endpoint: 'https://x.webpubsub.azure.com',
      accessKey: 'k',
    });
  });

  it('throws a clear error without endpoint or key', () => {
    expect(() => parseConnectionString('AccessKey=k')).toThrow(/Endpoint=/);
    expect(() => parseConnectionString('Endpoint=https://x')).toThrow(/AccessKey=/);
  });
});

describe('abuse protection', () => {
  it('splits multi-host origins', () => {
    expect(parseRequestOrigins('a.webpubsub.azure.com, Custom.Contoso.com')).toEqual([
      'a.webpubsub.azure.com',
      'custom.contoso.com',
    ]);
    expect(parseRequestOrigins(undefined)).toEqual([]);
    expect(parseRequestOrigins(['a', 'b,c'])).toEqual(['a', 'b', 'c']);
  });

  it('normalizes allowed endpoints to hosts', () => {
    expect(normalizeAllowedEndpoint('https://X.webpubsub.azure.com/path')).toBe(
      'x.webpubsub.azure.com',
    );
    expect(normalizeAllowedEndpoint('http://localhost:8080')).toBe('localhost:8080');
    expect(normalizeAllowedEndpoint('x.webpubsub.azure.com')).toBe('x.webpubsub.azure.com');
    expect(normalizeAllowedEndpoint('*')).toBe('*');
  });

  it('answers *, the matching request host, or nothing', () => {
    expect(resolveAllowedOrigin(['a.com'], ['*'])).toBe('*');
    expect(resolveAllowedOrigin(['a.com', 'b.com'], ['b.com'])).toBe('b.com');
    expect(resolveAllowedOrigin(['localhost'], ['localhost:8080'])).toBe('localhost');
    expect(resolveAllowedOrigin(['evil.com'], ['b.com'])).toBeUndefined();
  });
});

describe('header text', () => {
  it.each(['plain', 'Zoë', 'Łukasz', '李', 'emoji 🎉'])('round-trips %s as UTF-8 bytes', (text) => {
    const encoded = encodeHeaderText(text);
    expect(/[\u0100-\uffff]/.test(encoded)).toBe(false);
    expect(decodeHeaderText(encoded)).toBe(text);
  });

  it('leaves ASCII and values that are not UTF-8 alone', () => {
    expect(encodeHeaderText('conn-1')).toBe('conn-1');
    expect(decodeHeaderText('caf\xe9')).toBe('caf\xe9');
  });
});

describe('event types', () => {
  it('maps every ce-type and back', () => {
    expect(parseEventType('azure.webpubsub.sys.connect')).toEqual({ kind: 'connect' });
    expect(parseEventType('azure.webpubsub.gp.left')).toEqual({ kind: 'groupLeft' });
    expect(parseEventType('azure.webpubsub.user.say')).toEqual({ kind: 'user', userEvent: 'say' });
    expect(parseEventType('azure.webpubsub.user.')).toBeUndefined();
    expect(parseEventType('azure.webpubsub.sys.other')).toBeUndefined();
    expect(eventType('disconnected')).toBe('azure.webpubsub.sys.disconnected');
    expect(eventType('user', 'say')).toBe('azure.webpubsub.user.say');
  });
});

describe('connection state', () => {
  it('uses the web-pubsub-express format', () => {
    expect(encodeConnectionState({ n: 6 })).toBe('eyJuIjo2fQ==');
    expect(decodeConnectionState('eyJrZXkiOiJhIn0=')).toEqual({ key: 'a' });
    expect(encodeConnectionState({})).toBe('');
    expect(decodeConnectionState(undefined)).toEqual({});
  });

  it('throws on malformed states', () => {
    expect(() => decodeConnectionState('not base64!')).toThrow(/base64/);
    expect(() => decodeConnectionState(Buffer.from('[1]').toString('base64'))).toThrow(/object/);
    expect(() => decodeConnectionState(Buffer.from('{').toString('base64'))).toThrow();
  });
});

describe('bodies', () => {
  it('decodes user events by content type', () => {
    expect(decodeUserEventBody('text/plain', Buffer.from('hé'))).toEqual({
      data: 'hé',
      dataType: 'text',
    });
    expect(decodeUserEventBody('application/json; charset=utf-8', Buffer.from('"hello"'))).toEqual({
      data: 'hello',
      dataType: 'json',
    });
    expect(decodeUserEventBody('application/json', Buffer.from('null')).data).toBeNull();
    const binary = decodeUserEventBody('application/octet-stream', Buffer.from([0, 255]));
    expect(binary.dataType).toBe('binary');
    expect([...(binary.data as Buffer)]).toEqual([0, 255]);
    expect(decodeUserEventBody(undefined, Buffer.from('x')).dataType).toBe('binary');
  });

  it('refuses invalid UTF-8 and invalid JSON', () => {
    expect(() => decodeUserEventBody('text/plain', Buffer.from([0xc3]))).toThrow(InvalidBodyError);
    expect(() => decodeUserEventBody('application/json', Buffer.from('{'))).toThrow(/JSON/);
  });

  it('fills connect defaults and checks shapes', () => {
    expect(decodeConnectBody(Buffer.from('{"query":{"a":["1"]}}'))).toEqual({
      claims: {},
      query: { a: ['1'] },
      headers: {},
      subprotocols: [],
      clientCertificates: [],
    });
    expect(() => decodeConnectBody(Buffer.from('{"query":{"a":"1"}}'))).toThrow(
      /arrays of strings/,
    );
    expect(() => decodeConnectBody(Buffer.from('[]'))).toThrow(/JSON object/);
  });
});

const text = (reply: ReturnType<typeof encodeUserEventReply>) => [
  reply?.contentType,
  reply?.body.toString('utf8'),
];

describe('replies', () => {
  it('maps user-event return values', () => {
    expect(encodeUserEventReply(undefined)).toBeUndefined();
    expect(text(encodeUserEventReply('hi'))).toEqual(['text/plain; charset=utf-8', 'hi']);
    expect(text(encodeUserEventReply({ a: 1 }))).toEqual([
      'application/json; charset=utf-8',
      '{"a":1}',
    ]);
    expect(text(encodeUserEventReply(42))).toEqual(['application/json; charset=utf-8', '42']);
    expect(text(encodeUserEventReply(false))).toEqual(['application/json; charset=utf-8', 'false']);
    expect(encodeUserEventReply(new Uint8Array([1, 2]))?.contentType).toBe(
      'application/octet-stream',
    );
    expect(text(encodeUserEventReply(WebPubSubReply.json('hello')))).toEqual([
      'application/json; charset=utf-8',
      '"hello"',
    ]);
  });

  it('never sends an empty subprotocol on connect', () => {
    expect(encodeConnectReply({ userId: 'u', subprotocol: '' })?.body.toString()).toBe(
      '{"userId":"u"}',
    );
    expect(encodeConnectReply(undefined)).toBeUndefined();
    expect(() => encodeConnectReply('u1')).toThrow(/connect handler/);
  });
});

describe('upstream path matching', () => {
  const matches = createPathMatcher('/eventhandler/');
  const ce = { 'ce-type': 'azure.webpubsub.sys.connect' };

  it('matches the path and its sub-paths, ignoring case, query and fragment', () => {
    for (const url of [
      '/eventhandler',
      '/EventHandler/chat/connect',
      '/eventhandler?x=1',
      '/eventhandler#f',
    ]) {
      expect([url, matches(url, {})]).toEqual([url, true]);
    }
    expect(matches('/eventhandlers', {})).toBe(false);
  });

  it('looks under an unknown prefix only for Web PubSub requests', () => {
    expect(matches('/api/v1/eventhandler/chat', ce)).toBe(true);
    expect(matches('/api/v1/eventhandler', { 'webhook-request-origin': 'x' })).toBe(true);
    expect(matches('/users/eventhandler', {})).toBe(false);
    expect(matches('/users/eventhandler-stats', ce)).toBe(false);
  });

  it("takes every path for '/'", () => {
    expect(createPathMatcher('/')('/anything/at/all', {})).toBe(true);
  });
});

import type { LoggerService } from '@nestjs/common';
import { WebPubSubServiceClient } from '@azure/web-pubsub';
import { WebPubSubClient, WebPubSubJsonProtocol } from '@azure/web-pubsub-client';
import type { EmulatorOptions, WebPubSubEmulator } from 'nestjs-web-pubsub/emulator';
import {
  computeSignature,
  createSignatureVerifier,
  decodeConnectBody,
  eventType,
  REQUIRED_EVENT_HEADERS,
} from '../lib/web-pubsub.protocol.js';
import { afterEach, describe, expect, it } from 'vitest';
import {
  handshakeStatus,
  RawClient,
  SECONDARY_KEY,
  startTestEmulator,
  TEST_KEY,
  UpstreamServer,
  type RecordedRequest,
} from './emulator-helpers.js';

const JSON_PROTOCOL = 'json.webpubsub.azure.v1';

/** Collects log lines, to check what the emulator reports. */
class MemoryLogger implements LoggerService {
  readonly lines: Array<[string, string]> = [];
  log = (m: string) => void this.lines.push(['log', m]);
  error = (m: string) => void this.lines.push(['error', m]);
  warn = (m: string) => void this.lines.push(['warn', m]);
  debug = (m: string) => void this.lines.push(['debug', m]);
}

const connectionIdOf = async (client: RawClient) => {
  const connected = await client.nextJson();
  return connected.connectionId as string;
};

/** Both keys, and one handler for the hub `chat` with a query string to keep. */
const standard = (url: string): EmulatorOptions => ({
  secondaryAccessKey: SECONDARY_KEY,
  hubs: { chat: { urlTemplate: `${url}/events/{hub}/{event}?code=abc` } },
});

describe('emulator upstream delivery', () => {
  let upstream: UpstreamServer;
  let emulator: WebPubSubEmulator;
  let service: WebPubSubServiceClient;
  let clients: RawClient[] = [];
  let sdkClients: WebPubSubClient[] = [];

  async function setUp(options: (upstreamUrl: string) => EmulatorOptions): Promise<void> {
    upstream = await new UpstreamServer().start();
    emulator = await startTestEmulator(options(upstream.url));
    service = new WebPubSubServiceClient(emulator.connectionString, 'chat', {
      allowInsecureConnection: true,
    });
  }
  afterEach(async () => {
    for (const client of sdkClients) client.stop();
    for (const client of clients) client.close();
    clients = [];
    sdkClients = [];
    await emulator?.close();
    await upstream?.close();
  });

  async function connect(
    token: Parameters<WebPubSubServiceClient['getClientAccessToken']>[0] = {},
    protocols?: string | string[],
    query = '',
  ): Promise<RawClient> {
    const { url } = await service.getClientAccessToken(token);
    const client = await RawClient.connect(url + query, protocols);
    clients.push(client);
    return client;
  }

  it('validates the handler URL once, then sends signed CloudEvents with every header', async () => {
    await setUp(standard);
    const client = await connect(
      { userId: 'alice', roles: ['webpubsub.joinLeaveGroup'] },
      [JSON_PROTOCOL, 'custom'],
      '&extra=1',
    );
    const connectionId = await connectionIdOf(client);
    await connect({}, JSON_PROTOCOL);

    const validations = upstream.requests.filter((r) => r.method === 'OPTIONS');
    expect(validations).toHaveLength(1);
    expect(validations[0]!.url).toBe('/events/chat/validate?code=abc');
    expect(validations[0]!.headers['webhook-request-origin']).toBe(new URL(emulator.url).host);
    expect(validations[0]!.headers['ce-awpsversion']).toBe('1.0');

    const connectEvent = await upstream.waitForEvent('connect', connectionId);
    expect(connectEvent.url).toBe('/events/chat/connect?code=abc');
    for (const header of REQUIRED_EVENT_HEADERS) expect(connectEvent.headers[header]).toBeDefined();
    expect(connectEvent.headers).toMatchObject({
      'content-type': 'application/json; charset=utf-8',
      'ce-specversion': '1.0',
      'ce-awpsversion': '1.0',
      'ce-type': eventType('connect'),
      'ce-source': `/hubs/chat/client/${connectionId}`,
      'ce-id': '0',
      'ce-hub': 'chat',
      'ce-connectionid': connectionId,
      'ce-eventname': 'connect',
      'ce-userid': 'alice',
      'webhook-request-origin': new URL(emulator.url).host,
    });
    expect(connectEvent.headers['ce-subprotocol']).toBeUndefined();
    expect(Number.isNaN(Date.parse(connectEvent.headers['ce-time'] as string))).toBe(false);
    // One signature per key, each verifiable on its own.
    expect(connectEvent.headers['ce-signature']).toBe(
      `${computeSignature(TEST_KEY, connectionId)},${computeSignature(SECONDARY_KEY, connectionId)}`,
    );
    expect(
      createSignatureVerifier([SECONDARY_KEY])(
        connectionId,
        connectEvent.headers['ce-signature'] as string,
      ),
    ).toBe(true);
    expect(
      createSignatureVerifier(['other'])(
        connectionId,
        connectEvent.headers['ce-signature'] as string,
      ),
    ).toBe(false);

    const body = decodeConnectBody(connectEvent.body);
    expect(body.claims).toMatchObject({ sub: ['alice'], role: ['webpubsub.joinLeaveGroup'] });
    expect(body.claims.exp).toHaveLength(1);
    expect(body.query).toEqual({ extra: ['1'] });
    expect(body.subprotocols).toEqual([JSON_PROTOCOL, 'custom']);
    expect(Object.keys(body.headers).map((h) => h.toLowerCase())).toContain(
      'sec-websocket-protocol',
    );
    expect(body.clientCertificates).toEqual([]);

    const connected = await upstream.waitForEvent('connected', connectionId);
    expect(connected.headers).toMatchObject({
      'ce-type': eventType('connected'),
      'ce-id': '1',
      'ce-subprotocol': JSON_PROTOCOL,
      'ce-userid': 'alice',
    });
    expect(connected.body.toString()).toBe('{}');

    client.ws.close(1000, 'done');
    const disconnected = await upstream.waitForEvent('disconnected', connectionId);
    expect(disconnected.headers).toMatchObject({
      'ce-type': eventType('disconnected'),
      'ce-id': '2',
    });
    expect(JSON.parse(disconnected.body.toString())).toEqual({ reason: 'done' });
  });

  it('applies the connect response: userId, groups, roles, subprotocol and state', async () => {
    await setUp(standard);
    upstream.respond = (r) =>
      r.headers['ce-eventname'] === 'connect'
        ? {
            status: 200,
            headers: { 'content-type': 'application/json', 'ce-connectionState': 'c3RhdGU=' },
            body: JSON.stringify({
              userId: 'granted',
              groups: ['from-handler'],
              roles: ['webpubsub.sendToGroup.from-handler'],
              subprotocol: JSON_PROTOCOL,
            }),
          }
        : undefined;
    const client = await connect({ groups: ['from-token'], roles: ['webpubsub.joinLeaveGroup'] }, [
      'custom',
      JSON_PROTOCOL,
    ]);
    expect(client.ws.protocol).toBe(JSON_PROTOCOL);
    const connected = await client.nextJson();
    expect(connected).toMatchObject({ event: 'connected', userId: 'granted' });
    expect(await service.userExists('granted')).toBe(true);
    expect(await service.groupExists('from-token')).toBe(true);
    expect(await service.groupExists('from-handler')).toBe(true);

    // The roles were replaced: joining is gone, sending to the handler's group is allowed.
    client.send({ type: 'joinGroup', group: 'x', ackId: 1 });
    expect(await client.nextJson()).toMatchObject({ ackId: 1, error: { name: 'Forbidden' } });
    client.send({
      type: 'sendToGroup',
      group: 'from-handler',
      ackId: 2,
      dataType: 'text',
      data: 'hi',
    });
    const frames = [await client.nextJson(), await client.nextJson()];
    expect(frames).toContainEqual({ type: 'ack', ackId: 2, success: true });

    const connectedEvent = await upstream.waitForEvent('connected', connected.connectionId);
    expect(connectedEvent.headers).toMatchObject({
      'ce-userid': 'granted',
      'ce-connectionstate': 'c3RhdGU=',
      'ce-subprotocol': JSON_PROTOCOL,
    });
  });

  it('passes a 4xx connect answer to the handshake and sends no further events', async () => {
    await setUp(standard);
    upstream.respond = (r) =>
      r.headers['ce-eventname'] === 'connect'
        ? { status: r.headers['ce-userid'] === 'intruder' ? 401 : 503, body: 'no' }
        : undefined;
    const { url } = await service.getClientAccessToken({ userId: 'intruder' });
    expect(await handshakeStatus(url)).toBe(401);
    const other = await service.getClientAccessToken({ userId: 'unlucky' });
    expect(await handshakeStatus(other.url)).toBe(500);
    expect(upstream.events().map((r) => r.headers['ce-eventname'])).toEqual(['connect', 'connect']);
  });

  it('accepts a connect with no matching handler on the token alone', async () => {
    await setUp((url) => ({
      eventHandlers: [
        { urlTemplate: `${url}/one/{event}`, userEvents: ['alpha'], systemEvents: [] },
        { urlTemplate: `${url}/two/{event}`, systemEvents: ['connected'] },
      ],
    }));
    const client = await connect({}, JSON_PROTOCOL);
    const connectionId = await connectionIdOf(client);
    for (const [event, ackId] of [
      ['alpha', 1],
      ['beta', 2],
    ] as const) {
      client.send({ type: 'event', event, ackId, dataType: 'text', data: event });
      expect(await client.nextJson()).toMatchObject({ type: 'ack', ackId, success: true });
    }
    await upstream.waitForEvent('connected', connectionId);
    expect(upstream.events().map((r) => r.url)).toEqual([
      '/two/connected',
      '/one/alpha',
      '/two/beta',
    ]);
  });

  it('round-trips simple client frames and their replies', async () => {
    await setUp(standard);
    upstream.respond = (r) => {
      if (r.headers['ce-eventname'] !== 'message') return undefined;
      if (r.headers['content-type'] === 'text/plain') {
        return { status: 200, headers: { 'content-type': 'text/plain' }, body: `echo ${r.body}` };
      }
      return {
        status: 200,
        headers: { 'content-type': 'application/octet-stream' },
        body: Buffer.concat([r.body, r.body]),
      };
    };
    const client = await connect();
    client.send('hello');
    const text = await client.next();
    expect([text.isBinary, text.text]).toEqual([false, 'echo hello']);
    client.send(Buffer.from([1, 2]));
    const binary = await client.next();
    expect([binary.isBinary, [...binary.data]]).toEqual([true, [1, 2, 1, 2]]);

    const messages = upstream.events('message');
    expect(messages.map((m) => [m.headers['ce-type'], m.headers['content-type']])).toEqual([
      [eventType('user', 'message'), 'text/plain'],
      [eventType('user', 'message'), 'application/octet-stream'],
    ]);
    expect(messages.map((m) => m.headers['ce-id'])).toEqual(['2', '3']);
  });

  it('closes a simple client whose frame the handler refuses', async () => {
    await setUp(standard);
    upstream.respond = (r) =>
      r.headers['ce-eventname'] === 'message' ? { status: 500 } : undefined;
    const client = await connect();
    client.send('boom');
    expect((await client.closed).code).toBe(1011);
    const disconnected = await upstream.waitForEvent('disconnected');
    expect(JSON.parse(disconnected.body.toString()).reason).toMatch(/500/);
  });

  it('delivers JSON client events with their data types and returns the reply before the ack', async () => {
    await setUp(standard);
    upstream.respond = (r) => {
      const name = r.headers['ce-eventname'];
      if (name === 'fail') return { status: 500 };
      if (name === 'json')
        return { status: 200, headers: { 'content-type': 'application/json' }, body: r.body };
      if (name === 'text')
        return { status: 200, headers: { 'content-type': 'text/plain' }, body: 'ok' };
      if (name === 'binary')
        return {
          status: 200,
          headers: { 'content-type': 'application/octet-stream' },
          body: r.body,
        };
      return undefined;
    };
    const { url } = await service.getClientAccessToken({ userId: 'json' });
    const client = new WebPubSubClient(url, {
      protocol: WebPubSubJsonProtocol(),
      autoReconnect: false,
      messageRetryOptions: { maxRetries: 0 },
    });
    sdkClients.push(client);
    const order: string[] = [];
    const serverMessages: unknown[] = [];
    client.on('server-message', (e) => {
      order.push('message');
      serverMessages.push(e.message.data);
    });
    await client.start();

    await client.sendEvent('json', { a: [1] }, 'json');
    order.push('ack');
    await client.sendEvent('text', 'words', 'text');
    await client.sendEvent('binary', new Uint8Array([7, 8]).buffer, 'binary');
    await client.sendEvent('none', 'x', 'text');
    await expect(client.sendEvent('fail', 'x', 'text')).rejects.toMatchObject({
      errorDetail: { name: 'InternalServerError' },
    });

    expect(order.slice(0, 2)).toEqual(['message', 'ack']);
    expect(serverMessages.slice(0, 2)).toEqual([{ a: [1] }, 'ok']);
    expect([...new Uint8Array(serverMessages[2] as ArrayBuffer)]).toEqual([7, 8]);
    expect(serverMessages).toHaveLength(3);

    const events = upstream
      .events()
      .filter((r) => r.headers['ce-type']?.toString().includes('.user.'));
    expect(
      events.map((r) => [
        r.headers['ce-eventname'],
        r.headers['content-type'],
        r.body.toString('hex'),
      ]),
    ).toEqual([
      ['json', 'application/json', Buffer.from('{"a":[1]}').toString('hex')],
      ['text', 'text/plain', Buffer.from('words').toString('hex')],
      ['binary', 'application/octet-stream', '0708'],
      ['none', 'text/plain', Buffer.from('x').toString('hex')],
      ['fail', 'text/plain', Buffer.from('x').toString('hex')],
    ]);
    // The connection survived the failed event.
    expect(await service.userExists('json')).toBe(true);
  });

  it('keeps, replaces and clears the connection state from blocking responses', async () => {
    await setUp(standard);
    const replies: Array<string | undefined> = ['first', 'second', undefined, ''];
    upstream.respond = (r) => {
      const name = r.headers['ce-eventname'];
      if (name === 'connect') return { status: 204, headers: { 'ce-connectionState': 'initial' } };
      if (name === 'connected')
        return { status: 200, headers: { 'ce-connectionState': 'ignored' } };
      if (name !== 'message') return undefined;
      const state = replies.shift();
      const headers: Record<string, string> =
        state === undefined ? {} : { 'ce-connectionState': state };
      return { status: 204, headers };
    };
    const client = await connect();
    for (let i = 0; i < 5; i++) client.send(`m${i}`);
    client.ws.close(1000);
    await upstream.waitForEvent('disconnected');
    const seen = upstream
      .events()
      .filter((r) => r.headers['ce-eventname'] !== 'connect')
      .map((r) => [r.headers['ce-eventname'], r.headers['ce-connectionstate']]);
    expect(seen).toEqual([
      ['connected', 'initial'],
      ['message', 'initial'],
      ['message', 'first'],
      ['message', 'second'],
      ['message', 'second'],
      ['message', undefined],
      ['disconnected', undefined],
    ]);
  });

  it('sends the events of one connection one at a time, in order', async () => {
    await setUp(standard);
    let inFlight = 0;
    let maxInFlight = 0;
    upstream.respond = async (r) => {
      if (r.headers['ce-eventname'] !== 'message') return undefined;
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      // Hold each event a little so that overlapping requests, if any, would be seen.
      await new Promise((resolve) => setTimeout(resolve, 5));
      inFlight--;
      return { status: 200, headers: { 'content-type': 'text/plain' }, body: r.body };
    };
    const client = await connect();
    const count = 10;
    for (let i = 0; i < count; i++) client.send(`m${i}`);
    const echoes = [];
    for (let i = 0; i < count; i++) echoes.push((await client.next()).text);
    expect(echoes).toEqual(Array.from({ length: count }, (_, i) => `m${i}`));
    expect(maxInFlight).toBe(1);
    const ids = upstream.events('message').map((r) => Number(r.headers['ce-id']));
    expect(ids).toEqual(Array.from({ length: count }, (_, i) => i + 2));
  });

  it('does not deliver to a handler that fails abuse protection, and logs why', async () => {
    const logger = new MemoryLogger();
    await setUp((url) => ({ ...standard(url), logger, logLevel: 'debug' }));
    upstream.respond = (r: RecordedRequest) =>
      r.method === 'OPTIONS'
        ? { status: 200, headers: { 'WebHook-Allowed-Origin': 'elsewhere.example' } }
        : undefined;
    const { url } = await service.getClientAccessToken();
    expect(await handshakeStatus(url)).toBe(500);
    expect(upstream.events()).toEqual([]);
    const errors = logger.lines.filter(([level]) => level === 'error').map(([, m]) => m);
    expect(errors.join('\n')).toMatch(/Abuse protection validation failed.*elsewhere\.example/);
    expect(logger.lines.some(([level, m]) => level === 'debug' && m.startsWith('→ OPTIONS'))).toBe(
      true,
    );
  });
});

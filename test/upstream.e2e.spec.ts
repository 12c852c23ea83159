import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { WebPubSubServiceClient, decodeConnectionState } from 'nestjs-web-pubsub';
import {
  AppModule,
  AsyncAppModule,
  ChatHub,
  NotificationsHub,
  SayDto,
  calls,
} from './upstream-fixtures.js';
import {
  SECONDARY_KEY,
  connectBody,
  eventHeaders,
  sendEvent,
  startApp,
  ADAPTERS,
  type RunningApp,
} from './upstream-helpers.js';

describe.each(ADAPTERS)('over %s', (adapter) => {
  let running: RunningApp;
  let url: string;

  beforeAll(async () => {
    running = await startApp(AppModule, { adapter });
    url = running.url;
  });
  afterAll(() => running.close());
  beforeEach(() => {
    calls.length = 0;
  });

  const options = (headers: Record<string, string>, path = '/eventhandler') =>
    fetch(url + path, { method: 'OPTIONS', headers: { 'ce-awpsversion': '1.0', ...headers } });

  describe('abuse protection (OPTIONS)', () => {
    it('allows the endpoint host by default, echoing it', async () => {
      const res = await options({ 'WebHook-Request-Origin': 'localhost' });
      expect(res.status).toBe(200);
      expect(res.headers.get('webhook-allowed-origin')).toBe('localhost');
    });

    it('finds the allowed host among several origins', async () => {
      const res = await options({ 'WebHook-Request-Origin': 'evil.example.com, LOCALHOST' });
      expect(res.status).toBe(200);
      expect(res.headers.get('webhook-allowed-origin')).toBe('localhost');
    });

    it('answers on sub-paths, without any signature', async () => {
      const res = await options(
        { 'WebHook-Request-Origin': 'localhost' },
        '/eventhandler/validate',
      );
      expect(res.status).toBe(200);
    });

    it('refuses a host that is not allowed with 400 and a message', async () => {
      const res = await options({ 'WebHook-Request-Origin': 'evil.example.com' });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { message: string }).message).toBe(
        'None of the request origins (evil.example.com) is an allowed Web PubSub endpoint',
      );
      expect(res.headers.get('webhook-allowed-origin')).toBeNull();
    });

    it('refuses a probe without WebHook-Request-Origin', async () => {
      const res = await options({});
      expect(res.status).toBe(400);
      expect(((await res.json()) as { message: string }).message).toBe(
        'Missing WebHook-Request-Origin header',
      );
    });
  });

  describe('signature', () => {
    it('answers 401 without ce-signature, and the handler never runs', async () => {
      const res = await sendEvent(url, { key: null }, connectBody());
      expect(res.status).toBe(401);
      expect(res.json().message).toBe('Invalid or missing ce-signature');
      expect(calls).toEqual([]);
    });

    it('answers 401 for a signature made with another key', async () => {
      const res = await sendEvent(url, { key: SECONDARY_KEY }, connectBody());
      expect(res.status).toBe(401);
      expect(calls).toEqual([]);
    });

    it('answers 401 for the signature of another connection', async () => {
      const headers = eventHeaders({ connectionId: 'conn2' });
      const res = await sendEvent(
        url,
        {
          connectionId: 'conn1',
          headers: { 'ce-signature': headers['ce-signature']! },
        },
        connectBody(),
      );
      expect(res.status).toBe(401);
    });

    it('accepts upper-case hex and a list of values', async () => {
      const good = eventHeaders()['ce-signature']!;
      const upper = 'sha256=' + good.slice(7).toUpperCase();
      const res = await sendEvent(
        url,
        {
          headers: { 'ce-signature': `sha256=${'ab'.repeat(32)}, ${upper}` },
        },
        connectBody({ query: { user: ['ann'] } }),
      );
      expect(res.status).toBe(200);
    });
  });

  describe('request checks', () => {
    it('answers 400 naming every missing CloudEvents header', async () => {
      const res = await sendEvent(url, { omit: ['ce-hub', 'ce-eventName'] }, connectBody());
      expect(res.status).toBe(400);
      expect(res.json().message).toBe('Missing CloudEvents headers: ce-hub, ce-eventname');
      expect(calls).toEqual([]);
    });

    it('answers 400 without ce-connectionId (no signature can match)', async () => {
      const res = await sendEvent(url, { omit: ['ce-connectionId'] }, connectBody());
      expect(res.status).toBe(400);
      expect(res.json().message).toMatch(/ce-connectionid/);
    });

    it('answers 400 for an unknown ce-type', async () => {
      const res = await sendEvent(url, { type: 'azure.webpubsub.sys.reboot' }, connectBody());
      expect(res.status).toBe(400);
      expect(res.json().message).toBe('Unknown ce-type "azure.webpubsub.sys.reboot"');
    });

    it('answers 400 for another CloudEvents version', async () => {
      const res = await sendEvent(url, { headers: { 'ce-specversion': '0.3' } }, connectBody());
      expect(res.status).toBe(400);
    });

    it('answers 404 naming a hub without handlers', async () => {
      const res = await sendEvent(url, { hub: 'nobody' }, connectBody());
      expect(res.status).toBe(404);
      expect(res.json().message).toBe('No handlers are registered for hub "nobody"');
    });

    it('matches hub names case-insensitively', async () => {
      const res = await sendEvent(url, { hub: 'CHAT' }, connectBody({ query: { user: ['ann'] } }));
      expect(res.status).toBe(200);
      expect(calls[0]?.context?.hub).toBe('CHAT');
    });

    it('answers 400 for a connect body of the wrong shape', async () => {
      const res = await sendEvent(url, {}, { query: { user: 'not-an-array' } });
      expect(res.status).toBe(400);
      expect(res.json().message).toMatch(/"query" must map names to arrays of strings/);
      expect(calls).toEqual([]);
    });

    it('answers 400 for a JSON user event that is not JSON', async () => {
      const res = await sendEvent(url, { event: 'echo', contentType: 'application/json' }, '{nope');
      expect(res.status).toBe(400);
      expect(res.json().message).toMatch(/not valid JSON/);
    });

    it('answers 400 for text that is not UTF-8', async () => {
      const res = await sendEvent(url, { event: 'echo' }, new Uint8Array([0x61, 0xff, 0xfe]));
      expect(res.status).toBe(400);
      expect(res.json().message).toBe('body is not valid UTF-8');
    });
  });

  describe('connect', () => {
    it('passes the request and context, and answers 200 with the overrides and the state', async () => {
      const res = await sendEvent(
        url,
        { userId: 'token-user', connectionId: 'c-42' },
        connectBody({
          query: { user: ['ann'] },
          claims: { sub: ['token-user'] },
          subprotocols: ['a'],
        }),
      );
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
      expect(res.json()).toEqual({
        userId: 'ann',
        groups: ['lobby'],
        roles: ['webpubsub.sendToGroup.lobby'],
      });
      expect(decodeConnectionState(res.headers.get('ce-connectionstate')!)).toEqual({
        name: 'ann',
      });
      const { data, context } = calls[0]!;
      expect((data as { claims: unknown }).claims).toEqual({ sub: ['token-user'] });
      expect(context).toMatchObject({
        hub: 'chat',
        connectionId: 'c-42',
        userId: 'token-user',
        eventName: 'connect',
        eventKind: 'connect',
        origin: 'localhost',
        clientProtocol: 'default',
      });
    });

    it('answers 204 when the handler returns nothing', async () => {
      const res = await sendEvent(url, {}, connectBody({ query: { user: ['none'] } }));
      expect(res.status).toBe(204);
      expect(res.body.length).toBe(0);
      expect(res.headers.get('ce-connectionstate')).toBeNull();
    });

    it('rejects with the status and message of a thrown HttpException', async () => {
      const res = await sendEvent(url, {}, connectBody({ query: { user: ['reject'] } }));
      expect(res.status).toBe(401);
      expect(res.json()).toEqual({
        statusCode: 401,
        message: 'name is taken',
        error: 'Unauthorized',
      });
    });

    it('answers 500 with a generic message for any other error, leaking nothing', async () => {
      const res = await sendEvent(url, {}, connectBody({ query: { user: ['crash'] } }));
      expect(res.status).toBe(500);
      expect(res.json()).toEqual({
        statusCode: 500,
        message: 'Internal server error',
        error: 'Internal Server Error',
      });
      expect(res.text).not.toMatch(/secret|exploded|at /);
    });

    it('never sends an empty subprotocol', async () => {
      const res = await sendEvent(url, {}, connectBody({ query: { user: ['empty-subprotocol'] } }));
      expect(res.json()).toEqual({ userId: 'empty-subprotocol' });
    });

    it('keeps a subprotocol the client offered and refuses one it did not', async () => {
      const offered = await sendEvent(
        url,
        {},
        connectBody({ query: { user: ['protocol'] }, subprotocols: ['json.webpubsub.azure.v1'] }),
      );
      expect(offered.json()).toEqual({ subprotocol: 'json.webpubsub.azure.v1' });
      const notOffered = await sendEvent(
        url,
        {},
        connectBody({ query: { user: ['bad-subprotocol'] } }),
      );
      expect(notOffered.status).toBe(500);
    });

    it('accepts a hub whose only handler is connect, and 204s its other events', async () => {
      const res = await sendEvent(url, { hub: 'notifications', event: 'connected' }, {});
      expect(res.status).toBe(204);
      const connect = await sendEvent(url, { hub: 'notifications' }, connectBody());
      expect(connect.json()).toEqual({ userId: 'anonymous' });
    });
  });

  describe('user events', () => {
    it('answers a string as text/plain', async () => {
      const res = await sendEvent(url, { event: 'echo' }, 'héllo ✓');
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
      expect(res.text).toBe('héllo ✓');
      expect(calls[0]?.context?.dataType).toBe('text');
    });

    it('answers bytes as application/octet-stream', async () => {
      const all = new Uint8Array(256).map((_, i) => i);
      const res = await sendEvent(
        url,
        { event: 'echo', contentType: 'application/octet-stream' },
        all,
      );
      expect(res.headers.get('content-type')).toBe('application/octet-stream');
      expect([...res.body]).toEqual([...all]);
      expect(Buffer.isBuffer(calls[0]?.data)).toBe(true);
      const typed = await sendEvent(url, { event: 'bytes' });
      expect([...typed.body]).toEqual([0, 1, 254, 255]);
    });

    it.each([
      ['{"a":[1,2]}', { a: [1, 2] }],
      ['"hello"', 'hello'],
      ['42', 42],
      ['true', true],
    ])('passes JSON %s to the handler as parsed', async (body, parsed) => {
      const res = await sendEvent(url, { event: 'echo', contentType: 'application/json' }, body);
      expect(calls[0]?.data).toEqual(parsed);
      expect(res.status).toBe(200);
      if (typeof parsed === 'string') expect(res.text).toBe(parsed);
      else expect(res.json()).toEqual(parsed);
    });

    it('passes JSON null and answers 204 for it', async () => {
      const res = await sendEvent(url, { event: 'echo', contentType: 'application/json' }, 'null');
      expect(calls[0]?.data).toBeNull();
      expect(res.status).toBe(204);
    });

    it('answers 204 when the handler returns nothing', async () => {
      const res = await sendEvent(url, { event: 'nothing' }, 'x');
      expect(res.status).toBe(204);
      expect(calls.map((c) => c.handler)).toEqual(['nothing']);
    });

    it('sends a string as JSON with WebPubSubReply.json()', async () => {
      const res = await sendEvent(url, { event: 'jsonString' });
      expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
      expect(res.text).toBe('"hello"');
    });

    it('routes events without a handler of their own to @OnUserEvent()', async () => {
      const res = await sendEvent(url, { event: 'message' }, 'raw frame');
      expect(res.text).toBe('any:message');
    });

    it('passes payload and context positionally to undecorated parameters', async () => {
      const res = await sendEvent(
        url,
        { event: 'positional', contentType: 'application/json' },
        '[1]',
      );
      expect(res.json()).toEqual({ data: [1], hub: 'chat' });
    });

    it('answers 500 when an async handler rejects, and for thrown non-Errors', async () => {
      expect((await sendEvent(url, { event: 'reject' })).status).toBe(500);
      expect((await sendEvent(url, { event: 'throwString' })).status).toBe(500);
    });

    it('answers a thrown HttpException with its status', async () => {
      const res = await sendEvent(url, { event: 'forbidden' });
      expect(res.status).toBe(403);
      expect(res.json().message).toBe('not in this room');
    });
  });

  describe('validated DTOs', () => {
    it('hands the handler a transformed instance of the DTO', async () => {
      const res = await sendEvent(
        url,
        { event: 'say', userId: 'ann', contentType: 'application/json' },
        { text: 'hi' },
      );
      expect(res.json()).toEqual({ from: 'ann', text: 'hi', isDto: true });
      expect(calls[0]?.data).toBeInstanceOf(SayDto);
    });

    it('answers 400 listing the violations, without running the handler', async () => {
      const res = await sendEvent(
        url,
        { event: 'say', contentType: 'application/json' },
        { text: 'far too long for ten', priority: -1 },
      );
      expect(res.status).toBe(400);
      expect(res.json().message).toEqual([
        'text must be shorter than or equal to 10 characters',
        'priority must not be less than 0',
      ]);
      expect(calls).toEqual([]);
    });

    it('answers 400 for a payload that is not an object', async () => {
      const res = await sendEvent(url, { event: 'say', contentType: 'text/plain' }, 'hi');
      expect(res.status).toBe(400);
      expect(calls).toEqual([]);
    });
  });

  describe('guards, interceptors and pipes on handlers', () => {
    it('runs @UseGuards: a denying guard answers 403 and the handler never runs', async () => {
      const res = await sendEvent(url, { event: 'guarded' });
      expect(res.status).toBe(403);
      expect(calls).toEqual([]);
    });

    it('runs global guards, which can tell hub events apart with isWebPubSubContext()', async () => {
      const banned = await sendEvent(url, { event: 'echo', userId: 'banned' }, 'x');
      expect(banned.status).toBe(403);
      const allowed = await sendEvent(url, { event: 'echo', userId: 'ann' }, 'x');
      expect(allowed.status).toBe(200);
    });

    it('runs @UseInterceptors around the handler', async () => {
      const res = await sendEvent(url, { event: 'intercepted' });
      expect(res.json()).toEqual({ wrapped: 'inner' });
    });

    it('runs pipes given to @EventData()', async () => {
      expect((await sendEvent(url, { event: 'plusOne' }, '41')).json()).toBe(42);
      const bad = await sendEvent(url, { event: 'plusOne' }, 'forty-one');
      expect(bad.status).toBe(400);
      expect(bad.json().message).toMatch(/numeric string is expected/);
    });
  });

  describe('connection state', () => {
    it('round-trips the state the way the service stores it', async () => {
      const first = await sendEvent(url, { event: 'count' });
      const state = first.headers.get('ce-connectionstate')!;
      expect(decodeConnectionState(state)).toEqual({ n: 1 });
      const second = await sendEvent(url, {
        event: 'count',
        headers: { 'ce-connectionState': state },
      });
      expect(second.json()).toBe(2);
      expect(decodeConnectionState(second.headers.get('ce-connectionstate')!)).toEqual({ n: 2 });
    });

    it('sends no header when nothing changed', async () => {
      const res = await sendEvent(url, { event: 'states', states: { a: 1 } });
      expect(res.json()).toEqual({ a: 1 });
      expect(res.headers.get('ce-connectionstate')).toBeNull();
    });

    it('clears the state with an empty header', async () => {
      const res = await sendEvent(url, { event: 'clear', states: { a: 1 } });
      expect(res.status).toBe(204);
      expect(res.headers.get('ce-connectionstate')).toBe('');
    });

    it('ignores a malformed state instead of failing', async () => {
      const res = await sendEvent(url, {
        event: 'states',
        headers: { 'ce-connectionState': '%%%' },
      });
      expect(res.status).toBe(200);
      expect(res.json()).toEqual({});
    });

    it('ignores state changes on non-blocking events', async () => {
      const res = await sendEvent(url, { event: 'connected' }, {});
      expect(res.status).toBe(204);
      expect(res.headers.get('ce-connectionstate')).toBeNull();
    });
  });

  describe('non-blocking events', () => {
    it('awaits connected/disconnected/group handlers, then answers 204', async () => {
      expect((await sendEvent(url, { event: 'connected' }, {})).status).toBe(204);
      const res = await sendEvent(url, { event: 'disconnected' }, { reason: 'bye' });
      expect(res.status).toBe(204);
      expect((await sendEvent(url, { event: 'joined' }, { group: 'g1' })).status).toBe(204);
      expect((await sendEvent(url, { event: 'left' }, { group: 'g1' })).status).toBe(204);
      expect(calls.map((c) => [c.handler, c.data])).toEqual([
        ['connected', undefined],
        ['disconnected', { reason: 'bye' }],
        ['joined', { group: 'g1' }],
        ['left', { group: 'g1' }],
      ]);
    });

    it('answers 500 when one fails', async () => {
      const res = await sendEvent(url, { event: 'disconnected' }, { reason: 'crash' });
      expect(res.status).toBe(500);
    });

    it('answers 400 for a group event without a group', async () => {
      expect((await sendEvent(url, { event: 'joined' }, {})).status).toBe(400);
    });
  });

  describe('hub clients', () => {
    it('injects the official client of each hub, built from the options', () => {
      const chat = running.app.get(ChatHub).client;
      expect(chat).toBeInstanceOf(WebPubSubServiceClient);
      expect(chat.hubName).toBe('chat');
      expect(chat.endpoint).toBe('http://localhost:8080/');
      expect(running.app.get(NotificationsHub).chat.hubName).toBe('chat');
    });
  });

  describe('forRootAsync, custom path, several keys, any origin', () => {
    let asyncApp: RunningApp;
    beforeAll(async () => {
      asyncApp = await startApp(AsyncAppModule, { flow: 'Test.createTestingModule', adapter });
    });
    afterAll(() => asyncApp.close());

    it('serves the configured path and its sub-paths', async () => {
      const body = connectBody({ query: { user: ['ann'] } });
      expect((await sendEvent(asyncApp.url, {}, body, '/api/webpubsub')).status).toBe(200);
      expect((await sendEvent(asyncApp.url, {}, body, '/api/webpubsub/chat/connect')).status).toBe(
        200,
      );
      expect((await sendEvent(asyncApp.url, {}, body, '/eventhandler')).status).toBe(404);
    });

    it('accepts a signature made with the secondary key', async () => {
      const res = await sendEvent(
        asyncApp.url,
        { key: SECONDARY_KEY, event: 'echo' },
        'x',
        '/api/webpubsub',
      );
      expect(res.status).toBe(200);
    });

    it("answers '*' to any origin when allowedEndpoints is ['*']", async () => {
      const res = await fetch(asyncApp.url + '/api/webpubsub', {
        method: 'OPTIONS',
        headers: { 'WebHook-Request-Origin': 'anything.example.com' },
      });
      expect(res.headers.get('webhook-allowed-origin')).toBe('*');
    });
  });
});

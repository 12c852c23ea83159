import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebPubSubTestClient, createEventHeaders } from 'nestjs-web-pubsub/testing';
import { AppModule, calls } from './upstream-fixtures.js';
import { ADAPTERS, createAdapter, CONNECTION_STRING, SECONDARY_KEY } from './upstream-helpers.js';

describe.each(ADAPTERS)('WebPubSubTestClient over %s', (adapter) => {
  let app: INestApplication;

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    // Neither initialized nor listening: the kit does both on first use.
    app = moduleRef.createNestApplication(createAdapter(adapter), { logger: false });
  });
  afterAll(() => app.close());

  const client = (options: { userId?: string } = {}) =>
    new WebPubSubTestClient(app, { hub: 'chat', connectionString: CONNECTION_STRING, ...options });

  it('connects, then carries the user id and state the app chose into later events', async () => {
    const ann = client();
    const connect = await ann.connect({ query: { user: ['ann'] } });
    expect(connect.status).toBe(200);
    expect(connect.data).toEqual({
      userId: 'ann',
      groups: ['lobby'],
      roles: ['webpubsub.sendToGroup.lobby'],
    });
    expect(connect.newStates).toEqual({ name: 'ann' });
    expect(ann.userId).toBe('ann');

    const first = await ann.event('count', null);
    expect(first.data).toBe(1);
    expect(first.newStates).toEqual({ name: 'ann', n: 1 });
    expect((await ann.event('count', null)).data).toBe(2);
    expect(ann.states).toEqual({ name: 'ann', n: 2 });

    const say = await ann.event('say', { text: 'hello' });
    expect(say.data).toEqual({ from: 'ann', text: 'hello', isDto: true });
    expect(calls.at(-1)?.context?.states).toEqual({ name: 'ann', n: 2 });

    const cleared = await ann.event('clear', null);
    expect(cleared.status).toBe(204);
    expect(cleared.newStates).toEqual({});
    expect(ann.states).toEqual({});
  });

  it('numbers the events of a connection and keeps its id', async () => {
    const bob = client({ userId: 'bob' });
    await bob.connect({ query: { user: ['none'] } });
    calls.length = 0;
    await bob.event('echo', 'a');
    await bob.event('echo', 'b');
    expect(
      calls.map((c) => [c.context?.eventId, c.context?.connectionId, c.context?.userId]),
    ).toEqual([
      ['1', bob.connectionId, 'bob'],
      ['2', bob.connectionId, 'bob'],
    ]);
  });

  it('sends text, JSON and binary and decodes the replies by type', async () => {
    const c = client();
    const text = await c.event('echo', 'plain');
    expect([text.dataType, text.data]).toEqual(['text', 'plain']);
    const json = await c.event('echo', { a: [1] });
    expect([json.dataType, json.data]).toEqual(['json', { a: [1] }]);
    const jsonString = await c.event('echo', 'quoted', { dataType: 'json' });
    expect(jsonString.body.toString()).toBe('quoted');
    const binary = await c.event<Buffer>('echo', new Uint8Array([1, 2, 3]));
    expect(binary.dataType).toBe('binary');
    expect([...binary.data]).toEqual([1, 2, 3]);
    expect((await c.message('frame')).data).toBe('any:message');
  });

  it('reports rejections with their status and message', async () => {
    const result = await client().connect({ query: { user: ['reject'] } });
    expect(result).toMatchObject({ ok: false, status: 401, error: 'name is taken' });
    const invalid = await client().event('say', { text: 'x'.repeat(20) });
    expect(invalid.status).toBe(400);
    expect(invalid.error).toBe('text must be shorter than or equal to 10 characters');
  });

  it('sends the non-blocking events', async () => {
    const c = client();
    calls.length = 0;
    expect((await c.connected()).status).toBe(204);
    expect((await c.groupJoined('g')).status).toBe(204);
    expect((await c.groupLeft('g')).status).toBe(204);
    expect((await c.disconnected('bye')).status).toBe(204);
    expect(calls.map((call) => call.handler)).toEqual([
      'connected',
      'joined',
      'left',
      'disconnected',
    ]);
  });

  it('probes abuse protection', async () => {
    const result = await client().validate('localhost');
    expect(result.headers['webhook-allowed-origin']).toBe('localhost');
    expect((await client().validate('evil.example.com')).status).toBe(400);
  });

  it('signs with the keys it is given: a wrong one is refused', async () => {
    const wrong = new WebPubSubTestClient(app, { hub: 'chat', accessKeys: [SECONDARY_KEY] });
    expect((await wrong.connect()).status).toBe(401);
  });

  it('builds the headers for other HTTP clients too', () => {
    const headers = createEventHeaders({
      hub: 'chat',
      connectionId: 'conn1',
      kind: 'user',
      event: 'say',
      accessKeys: ['ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH'],
    });
    expect(headers).toMatchObject({
      'ce-type': 'azure.webpubsub.user.say',
      'ce-eventname': 'say',
      'ce-signature': 'sha256=8de7281e588e23b0a30a7180ffa240257b8176e983004c240c9f3f7a7233c993',
    });
  });
});

describe('WebPubSubTestClient on an app nobody started', () => {
  it('starts it once for clients used at the same time', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    const app = moduleRef.createNestApplication({ logger: false });
    try {
      const [a, b] = ['ann', 'bob'].map(
        (user) =>
          new WebPubSubTestClient(app, {
            hub: 'chat',
            connectionString: CONNECTION_STRING,
            userId: user,
          }),
      );
      const results = await Promise.all([
        a!.connect({ query: { user: ['a'] } }),
        b!.connect({ query: { user: ['b'] } }),
      ]);
      expect(results.map((r) => r.status)).toEqual([200, 200]);
      expect((await a!.validate()).headers['webhook-allowed-origin']).toBe('localhost');
    } finally {
      await app.close();
    }
  });
});

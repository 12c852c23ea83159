import { WebPubSubServiceClient } from '@azure/web-pubsub';
import { SignJWT } from 'jose';
import type { WebPubSubEmulator } from 'nestjs-web-pubsub/emulator';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RawClient, SECONDARY_KEY, startTestEmulator, TEST_KEY } from './emulator-helpers.js';

const JSON_PROTOCOL = 'json.webpubsub.azure.v1';

/** A REST bearer token made by hand, to test what the SDK never sends. */
const sign = (key: string, aud: string, exp: number) =>
  new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setAudience(aud)
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(key));

describe('emulator REST API through @azure/web-pubsub', () => {
  let emulator: WebPubSubEmulator;
  let service: WebPubSubServiceClient;
  let clients: RawClient[] = [];
  let hubCounter = 0;

  beforeAll(async () => {
    emulator = await startTestEmulator();
  });
  afterAll(() => emulator.close());
  afterEach(() => {
    for (const client of clients) client.close();
    clients = [];
  });

  // Each test gets its own hub, so connections of earlier tests never interfere.
  const newHub = (): WebPubSubServiceClient => {
    service = new WebPubSubServiceClient(emulator.connectionString, `hub${++hubCounter}`, {
      allowInsecureConnection: true,
    });
    return service;
  };

  /** A JSON-protocol client: it learns its connection id from the `connected` frame. */
  async function jsonClient(
    options: Parameters<WebPubSubServiceClient['getClientAccessToken']>[0] = {},
  ): Promise<RawClient & { id: string }> {
    const { url } = await service.getClientAccessToken(options);
    const client = await RawClient.connect(url, JSON_PROTOCOL);
    clients.push(client);
    const connected = await client.nextJson();
    expect(connected).toMatchObject({ type: 'system', event: 'connected' });
    return Object.assign(client, { id: connected.connectionId as string });
  }

  /** A simple (raw) client; its id is found through a group only it belongs to. */
  async function simpleClient(userId?: string): Promise<RawClient & { id: string }> {
    const marker = `only-${Math.random().toString(36).slice(2)}`;
    const { url } = await service.getClientAccessToken({ userId, groups: [marker] });
    const client = await RawClient.connect(url);
    clients.push(client);
    const members = [];
    for await (const member of await service.group(marker).listConnections()) members.push(member);
    expect(members).toHaveLength(1);
    return Object.assign(client, { id: members[0]!.connectionId });
  }

  it('answers the health check without a token', async () => {
    const response = await fetch(`${emulator.url}/api/health`, { method: 'HEAD' });
    expect(response.status).toBe(200);
  });

  it('refuses requests without a valid bearer token', async () => {
    newHub();
    const url = `${emulator.url}/api/hubs/chat/:send?api-version=2024-12-01`;
    const post = (token?: string) =>
      fetch(url, {
        method: 'POST',
        headers: token ? { authorization: `Bearer ${token}` } : {},
        body: 'x',
      });
    const now = Math.floor(Date.now() / 1000);

    expect((await post()).status).toBe(401);
    expect((await post(await sign('another-key', url, now + 60))).status).toBe(401);
    expect((await post(await sign(TEST_KEY, url, now - 60))).status).toBe(401);
    const otherPath = `${emulator.url}/api/hubs/other/:send`;
    expect((await post(await sign(TEST_KEY, otherPath, now + 60))).status).toBe(401);
    const refused = await post();
    expect(refused.headers.get('x-ms-error-code')).toBe('Unauthorized');
    // Exact URL, or the same path without the query, are both accepted.
    expect((await post(await sign(TEST_KEY, url, now + 60))).status).toBe(202);
    expect((await post(await sign(TEST_KEY, url.split('?')[0]!, now + 60))).status).toBe(202);

    const wrongKey = new WebPubSubServiceClient(
      `Endpoint=${emulator.url};AccessKey=not-the-key;Version=1.0;`,
      'chat',
      { allowInsecureConnection: true },
    );
    await expect(wrongKey.sendToAll('x')).rejects.toMatchObject({ statusCode: 401 });
  });

  it('accepts either access key when a secondary key is configured', async () => {
    const second = await startTestEmulator({ secondaryAccessKey: SECONDARY_KEY });
    try {
      for (const key of [TEST_KEY, SECONDARY_KEY]) {
        const client = new WebPubSubServiceClient(
          `Endpoint=${second.url};AccessKey=${key};Version=1.0;`,
          'chat',
          { allowInsecureConnection: true },
        );
        await expect(client.connectionExists('nobody')).resolves.toBe(false);
      }
    } finally {
      await second.close();
    }
  });

  it('sends to all, a user, a connection and a group with every data type', async () => {
    newHub();
    const raw = await simpleClient('alice');
    const json = await jsonClient({ userId: 'bob', groups: ['g1'] });

    await service.sendToAll({ hello: 'world' });
    expect((await raw.next()).text).toBe('{"hello":"world"}');
    expect(await json.nextJson()).toEqual({
      type: 'message',
      from: 'server',
      dataType: 'json',
      data: { hello: 'world' },
    });

    await service.sendToAll('plain text', { contentType: 'text/plain' });
    const text = await raw.next();
    expect([text.isBinary, text.text]).toEqual([false, 'plain text']);
    expect(await json.nextJson()).toMatchObject({ dataType: 'text', data: 'plain text' });

    await service.sendToAll(new Uint8Array([1, 2, 3]));
    const binary = await raw.next();
    expect([binary.isBinary, [...binary.data]]).toEqual([true, [1, 2, 3]]);
    expect(await json.nextJson()).toMatchObject({ dataType: 'binary', data: 'AQID' });

    // A JSON string keeps its quotes for a raw client.
    await service.sendToUser('alice', 'quoted');
    expect((await raw.next()).text).toBe('"quoted"');

    await service.sendToConnection(json.id, { to: 'bob' });
    expect(await json.nextJson()).toMatchObject({ from: 'server', data: { to: 'bob' } });

    await service.group('g1').sendToAll('to the group', { contentType: 'text/plain' });
    expect(await json.nextJson()).toEqual({
      type: 'message',
      from: 'group',
      group: 'g1',
      fromUserId: null,
      dataType: 'text',
      data: 'to the group',
    });

    // Sends to nobody are accepted, as the service does.
    await service.sendToUser('nobody', 'x');
    await service.sendToConnection('missing', 'x');

    // The raw client got nothing meant for others: its next frame is this marker.
    await service.sendToAll('end', { contentType: 'text/plain' });
    expect((await raw.next()).text).toBe('end');
  });

  it('honours excluded connections and OData filters', async () => {
    newHub();
    const alice = await jsonClient({ userId: 'alice', groups: ['red'] });
    const bob = await jsonClient({ userId: 'bob', groups: ['red', 'blue'] });
    const anonymous = await jsonClient({ groups: ['blue'] });
    const all = [alice, bob, anonymous];

    /** Sends a marker to all and returns which clients got the `probe` sent before it. */
    async function receivers(send: (probe: string) => Promise<void>): Promise<string[]> {
      await send('probe');
      await service.sendToAll('end', { contentType: 'text/plain' });
      const got: string[] = [];
      for (const [name, client] of [
        ['alice', alice],
        ['bob', bob],
        ['anonymous', anonymous],
      ] as const) {
        if ((await client.nextJson()).data === 'probe') {
          got.push(name);
          expect((await client.nextJson()).data).toBe('end');
        }
      }
      return got;
    }
    const text = { contentType: 'text/plain' } as const;

    expect(
      await receivers((p) => service.sendToAll(p, { ...text, excludedConnections: [bob.id] })),
    ).toEqual(['alice', 'anonymous']);
    expect(
      await receivers((p) => service.sendToAll(p, { ...text, filter: "userId eq 'bob'" })),
    ).toEqual(['bob']);
    expect(
      await receivers((p) =>
        service.sendToAll(p, { ...text, filter: "'blue' in groups and not (userId eq 'bob')" }),
      ),
    ).toEqual(['anonymous']);
    expect(
      await receivers((p) =>
        service.sendToAll(p, {
          ...text,
          filter: `userId eq null or connectionId eq '${alice.id}'`,
        }),
      ),
    ).toEqual(['alice', 'anonymous']);
    expect(
      await receivers((p) =>
        service.sendToAll(p, { ...text, filter: "userId ne 'alice' and 'red' in groups" }),
      ),
    ).toEqual(['bob']);
    expect(
      await receivers((p) =>
        service.group('red').sendToAll(p, { ...text, excludedConnections: [alice.id] }),
      ),
    ).toEqual(['bob']);
    expect(
      await receivers((p) =>
        service.group('blue').sendToAll(p, { ...text, filter: 'userId ne null' }),
      ),
    ).toEqual(['bob']);
    expect(
      await receivers((p) =>
        service.sendToUser('alice', p, { ...text, filter: "'blue' in groups" }),
      ),
    ).toEqual([]);

    await expect(service.sendToAll('x', { filter: 'length(userId) gt 1' })).rejects.toMatchObject({
      statusCode: 400,
      code: 'InvalidParam',
    });
    await expect(
      service.sendToAll('x', { filter: "userId eq 'unterminated" }),
    ).rejects.toMatchObject({
      statusCode: 400,
    });
    expect(all).toHaveLength(3);
  });

  it('checks existence and manages group membership of connections and users', async () => {
    newHub();
    const alice1 = await jsonClient({ userId: 'alice' });
    const alice2 = await jsonClient({ userId: 'alice' });
    const bob = await jsonClient({ userId: 'bob' });

    expect(await service.connectionExists(alice1.id)).toBe(true);
    expect(await service.connectionExists('missing')).toBe(false);
    expect(await service.userExists('alice')).toBe(true);
    expect(await service.userExists('carol')).toBe(false);
    expect(await service.groupExists('g')).toBe(false);

    await service.group('g').addConnection(bob.id);
    expect(await service.groupExists('g')).toBe(true);
    await service.group('g').removeConnection(bob.id);
    expect(await service.groupExists('g')).toBe(false);
    await expect(service.group('g').addConnection('missing')).rejects.toMatchObject({
      statusCode: 404,
    });

    await service.group('team').addUser('alice');
    const members = async (group: string) => {
      const ids: string[] = [];
      for await (const member of await service.group(group).listConnections()) {
        ids.push(member.connectionId);
        if (member.connectionId !== bob.id) expect(member.userId).toBe('alice');
      }
      return new Set(ids);
    };
    expect(await members('team')).toEqual(new Set([alice1.id, alice2.id]));
    // A later connection of the user joins the user's groups too.
    const alice3 = await jsonClient({ userId: 'alice' });
    expect((await members('team')).has(alice3.id)).toBe(true);
    await service.group('team').removeUser('alice');
    expect(await service.groupExists('team')).toBe(false);

    await service.group('a').addUser('alice');
    await service.group('b').addUser('alice');
    await service.removeUserFromAllGroups('alice');
    expect([await service.groupExists('a'), await service.groupExists('b')]).toEqual([
      false,
      false,
    ]);

    await service.group('a').addConnection(bob.id);
    await service.group('b').addConnection(bob.id);
    await service.removeConnectionFromAllGroups(bob.id);
    expect([await service.groupExists('a'), await service.groupExists('b')]).toEqual([
      false,
      false,
    ]);

    await service.addConnectionsToGroups(['x', 'y'], "userId eq 'alice'");
    expect(await members('x')).toEqual(new Set([alice1.id, alice2.id, alice3.id]));
    await service.removeConnectionsFromGroups(['x'], `connectionId eq '${alice1.id}'`);
    expect(await members('x')).toEqual(new Set([alice2.id, alice3.id]));
    expect((await members('y')).size).toBe(3);
  });

  it('lists group connections page by page', async () => {
    newHub();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push((await jsonClient({ userId: `u${i}`, groups: ['room'] })).id);
    const listed: string[] = [];
    const pages = (await service.group('room').listConnections({ maxPageSize: 2 })).byPage();
    let pageCount = 0;
    for await (const page of pages) {
      pageCount++;
      listed.push(...page.map((m) => m.connectionId));
    }
    expect(pageCount).toBe(3);
    expect(listed).toHaveLength(ids.length);
    expect(new Set(listed)).toEqual(new Set(ids));

    const top: string[] = [];
    for await (const member of await service
      .group('room')
      .listConnections({ maxPageSize: 2, top: 3 })) {
      top.push(member.connectionId);
    }
    expect(top).toHaveLength(3);
  });

  it('grants, checks and revokes permissions, which clients then feel', async () => {
    newHub();
    const client = await jsonClient();
    expect(await service.hasPermission(client.id, 'joinLeaveGroup', { targetName: 'g' })).toBe(
      false,
    );

    client.send({ type: 'joinGroup', group: 'g', ackId: 1 });
    expect(await client.nextJson()).toMatchObject({
      type: 'ack',
      ackId: 1,
      success: false,
      error: { name: 'Forbidden' },
    });

    await service.grantPermission(client.id, 'joinLeaveGroup', { targetName: 'g' });
    expect(await service.hasPermission(client.id, 'joinLeaveGroup', { targetName: 'g' })).toBe(
      true,
    );
    expect(await service.hasPermission(client.id, 'joinLeaveGroup', { targetName: 'h' })).toBe(
      false,
    );
    expect(await service.hasPermission(client.id, 'sendToGroup', { targetName: 'g' })).toBe(false);

    client.send({ type: 'joinGroup', group: 'g', ackId: 2 });
    expect(await client.nextJson()).toEqual({ type: 'ack', ackId: 2, success: true });
    client.send({ type: 'joinGroup', group: 'h', ackId: 3 });
    expect(await client.nextJson()).toMatchObject({
      ackId: 3,
      success: false,
      error: { name: 'Forbidden' },
    });

    await service.revokePermission(client.id, 'joinLeaveGroup', { targetName: 'g' });
    expect(await service.hasPermission(client.id, 'joinLeaveGroup', { targetName: 'g' })).toBe(
      false,
    );

    await service.grantPermission(client.id, 'sendToGroup');
    expect(await service.hasPermission(client.id, 'sendToGroup', { targetName: 'any' })).toBe(true);
    await expect(service.grantPermission('missing', 'sendToGroup')).rejects.toMatchObject({
      statusCode: 404,
    });
  });

  it('closes a connection, a user, a group and all connections', async () => {
    newHub();
    const one = await jsonClient({ userId: 'one' });
    await service.closeConnection(one.id, { reason: 'bye now' });
    expect(await one.nextJson()).toEqual({
      type: 'system',
      event: 'disconnected',
      message: 'bye now',
    });
    expect((await one.closed).code).toBe(1000);
    expect(await service.connectionExists(one.id)).toBe(false);

    const user1 = await jsonClient({ userId: 'u' });
    const user2 = await simpleClient('u');
    await service.closeUserConnections('u', { reason: 'user' });
    await Promise.all([user1.closed, user2.closed]);
    expect(await service.userExists('u')).toBe(false);

    const inGroup = await jsonClient({ groups: ['doomed'] });
    const other = await jsonClient({ groups: ['safe'] });
    await service.group('doomed').closeAllConnections({ reason: 'group' });
    await inGroup.closed;
    expect(await service.connectionExists(other.id)).toBe(true);

    const kept = await jsonClient();
    // The SDK passes `excluded` through although its options type does not declare it.
    await service.closeAllConnections({ excluded: [kept.id], reason: 'all' } as { reason: string });
    await other.closed;
    expect(await service.connectionExists(kept.id)).toBe(true);
  });

  it('answers unknown routes and bad parameters with ErrorDetail JSON', async () => {
    newHub();
    await expect(service.group(' ').sendToAll('x')).rejects.toMatchObject({ statusCode: 400 });
    await expect(service.grantPermission('c', 'nope' as 'sendToGroup')).rejects.toMatchObject({
      statusCode: 400,
    });
    const response = await fetch(`${emulator.url}/api/nothing`);
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ code: 'NotFound' });
  });
});

import { WebPubSubServiceClient } from '@azure/web-pubsub';
import {
  WebPubSubClient,
  WebPubSubJsonProtocol,
  WebPubSubJsonReliableProtocol,
  type OnGroupDataMessageArgs,
} from '@azure/web-pubsub-client';
import type { WebPubSubEmulator } from 'nestjs-web-pubsub/emulator';
import { WebSocket } from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { handshakeStatus, RawClient, startTestEmulator } from './emulator-helpers.js';

const JSON_PROTOCOL = 'json.webpubsub.azure.v1';
const RELIABLE_PROTOCOL = 'json.reliable.webpubsub.azure.v1';
const ALL_ROLES = ['webpubsub.joinLeaveGroup', 'webpubsub.sendToGroup'];

/** Resolves with the first `count` group messages the client receives. */
function groupMessages(client: WebPubSubClient, count: number): Promise<OnGroupDataMessageArgs[]> {
  const received: OnGroupDataMessageArgs[] = [];
  return new Promise((resolve) =>
    client.on('group-message', (e) => {
      received.push(e);
      if (received.length === count) resolve(received);
    }),
  );
}

describe('emulator WebSocket clients', () => {
  let emulator: WebPubSubEmulator;
  let service: WebPubSubServiceClient;
  let sdkClients: WebPubSubClient[] = [];
  let rawClients: RawClient[] = [];

  beforeAll(async () => {
    emulator = await startTestEmulator();
    service = new WebPubSubServiceClient(emulator.connectionString, 'chat', {
      allowInsecureConnection: true,
    });
  });
  afterAll(() => emulator.close());
  afterEach(() => {
    for (const client of sdkClients) client.stop();
    for (const client of rawClients) client.close();
    sdkClients = [];
    rawClients = [];
  });

  async function sdkClient(
    token: Parameters<WebPubSubServiceClient['getClientAccessToken']>[0],
    reliable = true,
  ): Promise<WebPubSubClient> {
    const { url } = await service.getClientAccessToken(token);
    const client = new WebPubSubClient(url, {
      protocol: reliable ? WebPubSubJsonReliableProtocol() : WebPubSubJsonProtocol(),
      autoReconnect: false,
      // A refused operation is an answer here, not a hiccup to retry.
      messageRetryOptions: { maxRetries: 0 },
    });
    sdkClients.push(client);
    await client.start();
    return client;
  }

  async function rawClient(
    token: Parameters<WebPubSubServiceClient['getClientAccessToken']>[0] = {},
    protocol?: string,
    query = '',
  ): Promise<RawClient> {
    const { url } = await service.getClientAccessToken(token);
    const client = await RawClient.connect(url + query, protocol);
    rawClients.push(client);
    return client;
  }

  describe('handshake', () => {
    it('answers 401 before the upgrade for a missing, forged, expired or misaddressed token', async () => {
      const base = emulator.url.replace('http', 'ws') + '/client/hubs/chat';
      expect(await handshakeStatus(base)).toBe(401);
      expect(await handshakeStatus(`${base}?access_token=not-a-jwt`)).toBe(401);

      const forged = new WebPubSubServiceClient(
        `Endpoint=${emulator.url};AccessKey=wrong-key;Version=1.0;`,
        'chat',
        { allowInsecureConnection: true },
      );
      expect(await handshakeStatus((await forged.getClientAccessToken()).url)).toBe(401);

      const expired = await service.getClientAccessToken({ expirationTimeInMinutes: -1 });
      expect(await handshakeStatus(expired.url)).toBe(401);

      const otherHub = await service.getClientAccessToken();
      expect(await handshakeStatus(otherHub.url.replace('/hubs/chat', '/hubs/other'))).toBe(401);

      expect(await handshakeStatus(emulator.url.replace('http', 'ws') + '/nowhere')).toBe(404);
    });

    it('accepts the token from an Authorization header too', async () => {
      const { url, token } = await service.getClientAccessToken({ userId: 'header-user' });
      const ws = new WebSocket(url.split('?')[0]!, JSON_PROTOCOL, {
        headers: { authorization: `Bearer ${token}` },
      });
      const client = new RawClient(ws);
      rawClients.push(client);
      expect(await client.nextJson()).toMatchObject({ event: 'connected', userId: 'header-user' });
    });
  });

  describe.each([
    ['json.webpubsub.azure.v1', false],
    ['json.reliable.webpubsub.azure.v1', true],
  ])('%s through @azure/web-pubsub-client', (_protocol, reliable) => {
    it('connects, joins, sends to a group with every data type and honours noEcho', async () => {
      const alice = await sdkClient({ userId: 'alice', roles: ALL_ROLES }, reliable);
      const bob = await sdkClient({ userId: 'bob', roles: ALL_ROLES }, reliable);
      await alice.joinGroup('room');
      await bob.joinGroup('room');

      const atBob = groupMessages(bob, 4);
      const atAlice = groupMessages(alice, 1);
      await alice.sendToGroup('room', { n: 1 }, 'json');
      await alice.sendToGroup('room', 'two', 'text');
      await alice.sendToGroup('room', new Uint8Array([3, 3, 3]).buffer, 'binary');
      // noEcho leaves out the sender only; this is the one message alice sees of her own.
      await alice.sendToGroup('room', 'quiet', 'text', { noEcho: true });
      await bob.sendToGroup('room', 'from bob', 'text', { noEcho: true });

      const messages = await atBob;
      expect(messages.map((e) => e.message.dataType)).toEqual(['json', 'text', 'binary', 'text']);
      expect(messages[0]!.message).toMatchObject({
        group: 'room',
        fromUserId: 'alice',
        data: { n: 1 },
      });
      expect(messages[1]!.message.data).toBe('two');
      expect([...new Uint8Array(messages[2]!.message.data as ArrayBuffer)]).toEqual([3, 3, 3]);
      expect(messages[3]!.message.data).toBe('quiet');
      if (reliable) {
        const ids = messages.map((e) => e.message.sequenceId!);
        expect(ids).toEqual([...ids].map((_, i) => ids[0]! + i));
      }
      // Alice's first group message is her own json echo: 'quiet' never came back to her.
      const [own] = await atAlice;
      expect(own!.message.data).toEqual({ n: 1 });

      await bob.leaveGroup('room');
      expect(await service.groupExists('room')).toBe(true);
      await alice.leaveGroup('room');
      expect(await service.groupExists('room')).toBe(false);
    });

    it('rejects group operations without the role with a Forbidden ack', async () => {
      const client = await sdkClient(
        { roles: ['webpubsub.joinLeaveGroup.mine', 'webpubsub.sendToGroups.team.*'] },
        reliable,
      );
      await client.joinGroup('mine');
      await expect(client.joinGroup('theirs')).rejects.toMatchObject({
        errorDetail: { name: 'Forbidden' },
      });
      await client.sendToGroup('team.red', 'ok', 'text');
      await expect(client.sendToGroup('team.red.deep', 'no', 'text')).rejects.toMatchObject({
        errorDetail: { name: 'Forbidden' },
      });
      await expect(client.sendToGroup('mine', 'no', 'text')).rejects.toMatchObject({
        errorDetail: { name: 'Forbidden' },
      });
    });

    it('answers a repeated ackId with Duplicate without repeating the operation', async () => {
      const sender = await sdkClient({ roles: ALL_ROLES }, reliable);
      const receiver = await sdkClient({ roles: ALL_ROLES }, reliable);
      await receiver.joinGroup('dup');
      const received = groupMessages(receiver, 2);
      expect(await sender.sendToGroup('dup', 'once', 'text', { ackId: 42 })).toMatchObject({
        isDuplicated: false,
      });
      expect(await sender.sendToGroup('dup', 'once', 'text', { ackId: 42 })).toMatchObject({
        isDuplicated: true,
      });
      await sender.sendToGroup('dup', 'marker', 'text');
      expect((await received).map((e) => e.message.data)).toEqual(['once', 'marker']);
    });
  });

  describe('JSON protocol frames', () => {
    it('answers ping with pong', async () => {
      const client = await rawClient({}, JSON_PROTOCOL);
      expect(await client.nextJson()).toMatchObject({ type: 'system', event: 'connected' });
      client.send({ type: 'ping' });
      expect(await client.nextJson()).toEqual({ type: 'pong' });
    });

    it.each([
      ['text that is not JSON', 'not json', /not JSON/],
      ['a JSON array', '[1,2]', /not a JSON object/],
      ['a frame without type', '{"ackId":1}', /type/],
      ['a negative ackId', '{"type":"joinGroup","group":"g","ackId":-1}', /ackId/],
      ['a joinGroup without group', '{"type":"joinGroup","ackId":1}', /group/],
      [
        'binary data that is not base64',
        '{"type":"sendToGroup","group":"g","dataType":"binary","data":"%%"}',
        /base64/,
      ],
      [
        'an unknown dataType',
        '{"type":"event","event":"e","dataType":"xml","data":"<a/>"}',
        /dataType/,
      ],
    ])('closes the connection with 1007 on %s', async (_name, frame, reason) => {
      const client = await rawClient({ roles: ALL_ROLES }, JSON_PROTOCOL);
      await client.nextJson();
      client.send(frame);
      const disconnected = await client.nextJson();
      expect(disconnected).toMatchObject({ type: 'system', event: 'disconnected' });
      expect(disconnected.message).toMatch(reason);
      const closed = await client.closed;
      expect(closed.code).toBe(1007);
      expect(closed.reason).toMatch(reason);
    });

    it('closes the connection with 1007 on a binary frame', async () => {
      const client = await rawClient({}, JSON_PROTOCOL);
      await client.nextJson();
      client.send(Buffer.from([1, 2, 3]));
      expect((await client.closed).code).toBe(1007);
    });

    it('answers an unsupported message type with a BadRequest ack and stays open', async () => {
      const client = await rawClient({}, JSON_PROTOCOL);
      await client.nextJson();
      client.send({ type: 'invoke', invocationId: '1', ackId: 7 });
      expect(await client.nextJson()).toMatchObject({
        type: 'ack',
        ackId: 7,
        success: false,
        error: { name: 'BadRequest' },
      });
      client.send({ type: 'ping' });
      expect(await client.nextJson()).toEqual({ type: 'pong' });
    });
  });

  describe('reliable protocol', () => {
    it('numbers messages, drops acknowledged ones and replays the rest after a drop', async () => {
      const client = await rawClient({ userId: 'r' }, RELIABLE_PROTOCOL);
      const connected = await client.nextJson();
      expect(connected).toMatchObject({ event: 'connected', userId: 'r' });
      expect(typeof connected.reconnectionToken).toBe('string');
      const { connectionId, reconnectionToken } = connected;

      await service.sendToConnection(connectionId, 'one', { contentType: 'text/plain' });
      await service.sendToConnection(connectionId, 'two', { contentType: 'text/plain' });
      expect(await client.nextJson()).toMatchObject({ sequenceId: 1, data: 'one' });
      expect(await client.nextJson()).toMatchObject({ sequenceId: 2, data: 'two' });
      client.send({ type: 'sequenceAck', sequenceId: 1 });
      client.send({ type: 'ping' });
      expect(await client.nextJson()).toEqual({ type: 'pong' }); // the ack was processed

      client.ws.terminate(); // a dropped network, not a close
      await client.closed;
      // The logical connection survives the drop and keeps collecting messages.
      expect(await service.connectionExists(connectionId)).toBe(true);
      await service.sendToConnection(connectionId, 'three', { contentType: 'text/plain' });

      const { url } = await service.getClientAccessToken({ userId: 'r' });
      const recovered = await RawClient.connect(
        `${url}&awps_connection_id=${connectionId}&awps_reconnection_token=${reconnectionToken}`,
        RELIABLE_PROTOCOL,
      );
      rawClients.push(recovered);
      const frames = [];
      for (let i = 0; i < 3; i++) frames.push(await recovered.nextJson());
      expect(frames[0]).toMatchObject({ event: 'connected', connectionId });
      expect(frames.slice(1).map((f) => [f.sequenceId, f.data])).toEqual([
        [2, 'two'],
        [3, 'three'],
      ]);
    });

    it('refuses recovery of an unknown connection with close code 1008', async () => {
      const { url } = await service.getClientAccessToken();
      const client = await RawClient.connect(
        `${url}&awps_connection_id=nope&awps_reconnection_token=nope`,
        RELIABLE_PROTOCOL,
      );
      rawClients.push(client);
      expect((await client.closed).code).toBe(1008);
    });

    it('does not keep a connection the client closed', async () => {
      const client = await rawClient({}, RELIABLE_PROTOCOL);
      const { connectionId } = await client.nextJson();
      client.ws.close(1000);
      await client.closed;
      // The server side may finish its close handshake just after the client's.
      while (await service.connectionExists(connectionId)) await new Promise(setImmediate);
      expect(await service.connectionExists(connectionId)).toBe(false);
    });
  });

  describe('simple clients', () => {
    it('sends frames straight to a group in sendToGroup mode', async () => {
      const listener = await rawClient({ groups: ['lobby'] });
      const sender = await rawClient(
        { roles: ['webpubsub.sendToGroup.lobby'], groups: ['lobby'] },
        undefined,
        '&webpubsub_mode=sendToGroup&group=lobby&noEcho=true',
      );
      sender.send('hello lobby');
      sender.send(Buffer.from([9]));
      const text = await listener.next();
      expect([text.isBinary, text.text]).toEqual([false, 'hello lobby']);
      const binary = await listener.next();
      expect([binary.isBinary, [...binary.data]]).toEqual([true, [9]]);
      await service.group('lobby').sendToAll('end', { contentType: 'text/plain' });
      // noEcho: the sender's first frame is the REST message, not its own.
      expect((await sender.next()).text).toBe('end');
    });
  });

  it('carries messages between 200 concurrent clients', async () => {
    const count = 200;
    const clients = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        sdkClient({ userId: `user${i}`, roles: ALL_ROLES, groups: ['crowd'] }, i % 2 === 0),
      ),
    );
    const inboxes = clients.map((client) => groupMessages(client, count));
    await Promise.all(clients.map((client, i) => client.sendToGroup('crowd', { from: i }, 'json')));
    const received = await Promise.all(inboxes);
    for (const messages of received) {
      const senders = messages.map((e) => (e.message.data as { from: number }).from);
      expect(new Set(senders).size).toBe(count);
    }
  });

  it('close() ends every client and the server promptly', async () => {
    const local = await startTestEmulator();
    const localService = new WebPubSubServiceClient(local.connectionString, 'chat', {
      allowInsecureConnection: true,
    });
    const json = await RawClient.connect(
      (await localService.getClientAccessToken()).url,
      JSON_PROTOCOL,
    );
    const simple = await RawClient.connect((await localService.getClientAccessToken()).url);
    await json.nextJson();
    await local.close();
    expect(await json.nextJson()).toMatchObject({ type: 'system', event: 'disconnected' });
    expect((await json.closed).code).toBe(1001);
    expect((await simple.closed).code).toBe(1001);
    await expect(fetch(`${local.url}/api/health`, { method: 'HEAD' })).rejects.toThrow();
  });
});

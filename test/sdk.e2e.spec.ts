/**
 * The whole path, driven only by Microsoft's packages: `@azure/web-pubsub-client` clients and the
 * `WebPubSubServiceClient` injected into the app talk to our emulator, which calls the app's
 * upstream handlers built with this module. Raw `ws` clients cover the simple protocol and the
 * error paths.
 */
import {
  Controller,
  Get,
  type INestApplication,
  Module,
  Query,
  UnauthorizedException,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  WebPubSubClient,
  type OnGroupDataMessageArgs,
  type OnServerDataMessageArgs,
} from '@azure/web-pubsub-client';
import { IsInt, Max, Min } from 'class-validator';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  EventContext,
  EventData,
  InjectHub,
  OnConnect,
  OnConnected,
  OnDisconnected,
  OnUserEvent,
  WebPubSubHub,
  WebPubSubModule,
  WebPubSubServiceClient,
  type ConnectRequest,
  type DisconnectedRequest,
  type WebPubSubContext,
} from 'nestjs-web-pubsub';
import { startEmulator, type WebPubSubEmulator } from 'nestjs-web-pubsub/emulator';

class ScoreDto {
  @IsInt()
  @Min(1)
  @Max(100)
  points!: number;
}

interface Seen {
  handler: string;
  userId?: string;
  connectionId: string;
  data?: unknown;
  states: Record<string, unknown>;
}
const seen: Seen[] = [];
const record = (handler: string, context: WebPubSubContext, data?: unknown) =>
  seen.push({
    handler,
    userId: context.userId,
    connectionId: context.connectionId,
    data,
    states: { ...context.states },
  });

@WebPubSubHub('game')
class GameHub {
  constructor(@InjectHub() private readonly hub: WebPubSubServiceClient) {}

  @OnConnect()
  connect(@EventData() request: ConnectRequest, @EventContext() context: WebPubSubContext) {
    record('connect', context, request.query);
    if (request.query.deny) throw new UnauthorizedException('no entry');
    context.setState('score', 0);
    return {
      groups: ['players'],
      roles: ['webpubsub.joinLeaveGroups.team-*', 'webpubsub.sendToGroups.team-*'],
    };
  }

  @OnConnected()
  connected(@EventContext() context: WebPubSubContext) {
    record('connected', context);
  }

  @OnUserEvent('score')
  async score(@EventData() { points }: ScoreDto, @EventContext() context: WebPubSubContext) {
    const score = (context.states.score as number) + points;
    context.setState('score', score);
    record('score', context, points);
    await this.hub.group('players').sendToAll({ type: 'scored', user: context.userId, score });
    return { score };
  }

  /** Simple clients: every frame is the event `message`. */
  @OnUserEvent('message')
  frame(@EventData() data: string | Buffer, @EventContext() context: WebPubSubContext) {
    record('message', context, data);
    return typeof data === 'string' ? data.toUpperCase() : Buffer.from(data).reverse();
  }

  @OnDisconnected()
  disconnected(
    @EventData() request: DisconnectedRequest,
    @EventContext() context: WebPubSubContext,
  ) {
    record('disconnected', context, request.reason);
  }
}

@Controller()
class NegotiateController {
  constructor(@InjectHub('game') private readonly hub: WebPubSubServiceClient) {}

  @Get('negotiate')
  async negotiate(@Query('user') user: string) {
    const token = await this.hub.getClientAccessToken({ userId: user });
    return { url: token.url };
  }
}

let connectionString = '';

@Module({
  imports: [WebPubSubModule.forRootAsync({ useFactory: () => ({ connectionString }) })],
  controllers: [NegotiateController],
  providers: [GameHub],
})
class GameModule {}

let emulator: WebPubSubEmulator;
let app: INestApplication;
let appUrl: string;
const clients: WebPubSubClient[] = [];
const sockets: WebSocket[] = [];

beforeAll(async () => {
  emulator = await startEmulator({ port: 0, host: '127.0.0.1', logLevel: 'silent' });
  connectionString = emulator.connectionString;
  app = await NestFactory.create(GameModule, { logger: false });
  await app.listen(0, '127.0.0.1');
  appUrl = await app.getUrl();
  emulator.setEventHandlers({ urlTemplate: `${appUrl}/eventhandler` });
});

afterAll(async () => {
  for (const client of clients) client.stop();
  for (const socket of sockets) socket.terminate();
  await emulator?.close();
  await app?.close();
});

beforeEach(() => {
  seen.length = 0;
});

/** A client that negotiates through the app, as a browser would. */
function player(user: string) {
  const client = new WebPubSubClient(
    {
      getClientAccessUrl: async () => {
        const response = await fetch(`${appUrl}/negotiate?user=${encodeURIComponent(user)}`);
        return ((await response.json()) as { url: string }).url;
      },
    },
    // A refused send is final here; the SDK would otherwise retry it for seconds.
    { messageRetryOptions: { maxRetries: 0 } },
  );
  clients.push(client);
  const received: unknown[] = [];
  client.on('server-message', (e: OnServerDataMessageArgs) => received.push(e.message.data));
  client.on('group-message', (e: OnGroupDataMessageArgs) =>
    received.push({ group: e.message.group, from: e.message.fromUserId, data: e.message.data }),
  );
  return { client, received };
}

const until = async (check: () => boolean, what: string) => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!check()) throw new Error(`timed out waiting for ${what}`);
};

describe('official SDKs, emulator and module end to end', () => {
  it('connects through the upstream, scores with validated events and state, and broadcasts', async () => {
    const ann = player('ann');
    const bob = player('bob');
    await ann.client.start();
    await until(() => seen.some((s) => s.handler === 'connected'), 'ann connected upstream');
    await bob.client.start();
    await until(() => seen.filter((s) => s.handler === 'connected').length === 2, 'bob connected');

    expect(seen.map((s) => [s.handler, s.userId])).toEqual([
      ['connect', 'ann'],
      ['connected', 'ann'],
      ['connect', 'bob'],
      ['connected', 'bob'],
    ]);
    expect(seen[1]!.states).toEqual({ score: 0 });

    // The reply reaches the caller as a server message before the ack; the broadcast reaches both.
    const ack = await ann.client.sendEvent('score', { points: 5 }, 'json');
    expect(ack.isDuplicated).toBe(false);
    await ann.client.sendEvent('score', { points: 7 }, 'json');
    await until(() => bob.received.length === 2, 'bob got both broadcasts');
    const scored = (score: number) => ({
      group: 'players',
      from: null, // sent by the app through REST, not by a client
      data: { type: 'scored', user: 'ann', score },
    });
    expect(bob.received).toEqual([scored(5), scored(12)]);
    await until(() => ann.received.length === 4, 'ann got replies and broadcasts');
    // The handler broadcasts before it returns, so the broadcast comes first.
    expect(ann.received).toEqual([scored(5), { score: 5 }, scored(12), { score: 12 }]);
    expect(
      seen.filter((s) => s.handler === 'score').map((s) => [s.userId, s.data, s.states]),
    ).toEqual([
      ['ann', 5, { score: 5 }],
      ['ann', 7, { score: 12 }],
    ]);

    // A DTO violation answers 400 upstream: the SDK sees a failed send.
    await expect(ann.client.sendEvent('score', { points: 1000 }, 'json')).rejects.toMatchObject({
      errorDetail: { name: 'InternalServerError' },
    });

    // Groups the connect handler's roles allow, and group messages between clients.
    await ann.client.joinGroup('team-red');
    await bob.client.joinGroup('team-red');
    await expect(bob.client.joinGroup('admins')).rejects.toMatchObject({
      errorDetail: { name: 'Forbidden' },
    });
    await ann.client.sendToGroup('team-red', 'go red', 'text', { noEcho: true });
    await until(() => bob.received.some((m) => (m as { group?: string }).group), 'group message');
    expect(bob.received.at(-1)).toEqual({ group: 'team-red', from: 'ann', data: 'go red' });
    await bob.client.stop();
    await until(() => seen.some((s) => s.handler === 'disconnected'), 'bob disconnected upstream');
    expect(seen.find((s) => s.handler === 'disconnected')).toMatchObject({
      userId: 'bob',
      states: { score: 0 },
    });
  });
});

describe('simple WebSocket clients and error paths', () => {
  const clientUrl = async (user: string, query = '') => {
    const response = await fetch(`${appUrl}/negotiate?user=${encodeURIComponent(user)}`);
    return ((await response.json()) as { url: string }).url + query;
  };
  const open = (url: string) =>
    new Promise<WebSocket>((resolve, reject) => {
      const socket = new WebSocket(url);
      sockets.push(socket);
      socket.once('open', () => resolve(socket));
      socket.once('unexpected-response', (_req, res) =>
        reject(new Error(`handshake ${res.statusCode}`)),
      );
      socket.once('error', reject);
    });
  const nextFrame = (socket: WebSocket) =>
    new Promise<{ data: Buffer; binary: boolean }>((resolve) =>
      socket.once('message', (data, binary) => resolve({ data: data as Buffer, binary })),
    );

  it('turns every frame into the user event "message" and sends the reply back as a frame', async () => {
    const socket = await open(await clientUrl('cat'));
    const text = nextFrame(socket);
    socket.send('meow');
    expect(await text).toEqual({ data: Buffer.from('MEOW'), binary: false });
    const bytes = nextFrame(socket);
    socket.send(Buffer.from([1, 2, 3]));
    const reply = await bytes;
    expect(reply.binary).toBe(true);
    expect([...reply.data]).toEqual([3, 2, 1]);
    expect(seen.filter((s) => s.handler === 'message').map((s) => s.userId)).toEqual([
      'cat',
      'cat',
    ]);
  });

  it('carries user ids beyond ASCII through the headers intact', async () => {
    const socket = await open(await clientUrl('Łukasz 李'));
    const reply = nextFrame(socket);
    socket.send('cześć');
    expect((await reply).data.toString()).toBe('CZEŚĆ');
    expect(seen.map((s) => [s.handler, s.userId, s.data])).toEqual([
      ['connect', 'Łukasz 李', {}],
      ['connected', 'Łukasz 李', undefined],
      ['message', 'Łukasz 李', 'cześć'],
    ]);
  });

  it('refuses a bad token with 401 before any upstream call', async () => {
    const url = (await clientUrl('x')).replace(/access_token=[^&]+/, 'access_token=forged');
    await expect(open(url)).rejects.toThrow('handshake 401');
    expect(seen).toEqual([]);
  });

  it('passes the connect handler’s 401 to the client as its handshake status', async () => {
    await expect(open(await clientUrl('dan', '&deny=1'))).rejects.toThrow('handshake 401');
    expect(seen.map((s) => s.handler)).toEqual(['connect']);
  });

  it('closes a JSON client that sends a malformed frame, and the upstream hears it left', async () => {
    const socket = new WebSocket(await clientUrl('eve'), 'json.webpubsub.azure.v1');
    sockets.push(socket);
    await new Promise((resolve) => socket.once('open', resolve));
    const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
    socket.send('{not json');
    expect(await closed).toBe(1007);
    await until(() => seen.some((s) => s.handler === 'disconnected'), 'disconnected upstream');
  });
});

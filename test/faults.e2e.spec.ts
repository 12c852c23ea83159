/** Handlers that hang or throw odd things, shutdown with requests in flight, retried events. */
import { Module, type LoggerService } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  EventContext,
  EventData,
  OnUserEvent,
  WebPubSubHub,
  WebPubSubModule,
  type WebPubSubContext,
} from 'nestjs-web-pubsub';
import {
  ADAPTERS,
  createAdapter,
  CONNECTION_STRING,
  sendEvent,
  type RunningApp,
} from './upstream-helpers.js';

const runs: string[] = [];
let release: () => void = () => undefined;

@WebPubSubHub('faults')
class FaultyHub {
  @OnUserEvent('hang')
  hang() {
    return new Promise(() => undefined);
  }

  @OnUserEvent('slow')
  async slow(@EventContext() context: WebPubSubContext) {
    runs.push(`slow ${context.eventId}`);
    await new Promise<void>((resolve) => (release = resolve));
    return 'finished';
  }

  @OnUserEvent('count')
  async count(@EventContext() context: WebPubSubContext) {
    runs.push(`count ${context.eventId}`);
    await new Promise((resolve) => setTimeout(resolve, 30));
    return { run: runs.length };
  }

  private flaky = 0;

  /** Fails on its first run only, like a dependency that was briefly down. */
  @OnUserEvent('flaky')
  flakyOnce(@EventContext() context: WebPubSubContext) {
    runs.push(`flaky ${context.eventId}`);
    if (this.flaky++ === 0) throw new Error('dependency down');
    return 'ok';
  }

  @OnUserEvent('throw')
  throwValue(@EventData() kind: string) {
    const values: Record<string, unknown> = {
      string: 'just a string',
      undefined: undefined,
      null: null,
      number: 42,
      bare: Object.create(null),
      circular: (() => {
        const o: Record<string, unknown> = {};
        o.self = o;
        return o;
      })(),
    };
    throw values[kind];
  }
}

@Module({
  imports: [
    WebPubSubModule.forRoot({
      connectionString: CONNECTION_STRING,
      handlerTimeout: 300,
      deduplicationWindow: 2_000,
    }),
  ],
  providers: [FaultyHub],
})
class FaultsModule {}

class CapturingLogger implements LoggerService {
  readonly errors: string[] = [];
  log() {}
  warn() {}
  debug() {}
  error(message: string) {
    this.errors.push(message);
  }
}

describe.each(ADAPTERS)('faults over %s', (adapter) => {
  let running: RunningApp;
  let logger: CapturingLogger;
  let closed = false;

  beforeAll(async () => {
    logger = new CapturingLogger();
    const app = await NestFactory.create(FaultsModule, createAdapter(adapter), { logger });
    await app.listen(0, '127.0.0.1');
    running = {
      app,
      url: (await app.getUrl()).replace('[::1]', '127.0.0.1'),
      close: () => app.close(),
    };
  });
  afterAll(async () => {
    if (!closed) await running.close();
  });
  beforeEach(() => {
    runs.length = 0;
  });

  let id = 0;
  const send = (event: string, body = '', eventId = String(++id)) =>
    sendEvent(running.url, { hub: 'faults', event, headers: { 'ce-id': eventId } }, body);

  it('cuts off a handler that hangs, with 504 and a log line naming it', async () => {
    const res = await send('hang');
    expect(res.status).toBe(504);
    expect(res.json().message).toBe('The event handler did not answer in time');
    expect(
      logger.errors.some((e) => /FaultyHub\.hang .* did not answer within 300 ms/.test(e)),
    ).toBe(true);
  });

  it.each(['string', 'undefined', 'null', 'number', 'bare', 'circular'])(
    'answers 500 when a handler throws a non-Error (%s), and keeps serving',
    async (kind) => {
      const res = await send('throw', kind);
      expect(res.status).toBe(500);
      expect(res.json()).toEqual({
        statusCode: 500,
        message: 'Internal server error',
        error: 'Internal Server Error',
      });
      expect((await send('count')).status).toBe(200);
    },
  );

  it('runs a retried event once and answers every delivery alike', async () => {
    const [first, retry] = await Promise.all([
      send('count', '', 'dup-1'),
      send('count', '', 'dup-1'),
    ]);
    const late = await send('count', '', 'dup-1');
    expect(runs).toEqual(['count dup-1']);
    expect([first.json(), retry.json(), late.json()]).toEqual([{ run: 1 }, { run: 1 }, { run: 1 }]);
    await send('count', '', 'dup-2');
    expect(runs).toEqual(['count dup-1', 'count dup-2']);
  });

  it('runs a retry again when the first delivery failed', async () => {
    expect((await send('flaky', '', 'retry-1')).status).toBe(500);
    expect((await send('flaky', '', 'retry-1')).status).toBe(200);
    expect(runs).toEqual(['flaky retry-1', 'flaky retry-1']);
  });

  it('tells apart the network connections of one MQTT client id', async () => {
    const mqtt = (physical: string) =>
      sendEvent(running.url, {
        hub: 'faults',
        event: 'count',
        connectionId: 'device-1',
        subprotocol: 'mqtt',
        headers: { 'ce-id': '1', 'ce-physicalConnectionId': physical },
      });
    await mqtt('p1');
    await mqtt('p2');
    expect(runs).toEqual(['count 1', 'count 1']);
  });

  it('keeps ce-id scoped to its connection when de-duplicating', async () => {
    await sendEvent(running.url, {
      hub: 'faults',
      event: 'count',
      connectionId: 'a',
      headers: { 'ce-id': '7' },
    });
    await sendEvent(running.url, {
      hub: 'faults',
      event: 'count',
      connectionId: 'b',
      headers: { 'ce-id': '7' },
    });
    expect(runs).toEqual(['count 7', 'count 7']);
  });

  it('finishes requests in flight on shutdown and answers new ones 503', async () => {
    const inFlight = send('slow');
    await expect.poll(() => runs.length).toBe(1);
    const closing = running.close();
    closed = true;
    await expect.poll(async () => (await send('count')).status).toBe(503);
    const refused = await send('count');
    expect(refused.json().message).toBe('The application is shutting down');
    expect(refused.headers.get('connection')).toBe('close');
    release();
    const finished = await inFlight;
    expect([finished.status, finished.text]).toEqual([200, 'finished']);
    await closing;
  });
});

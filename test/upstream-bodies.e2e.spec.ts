import { createHash } from 'node:crypto';
import { Body, Controller, Module, Post } from '@nestjs/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
  CONNECTION_STRING,
  sendEvent,
  startApp,
  type Flow,
  type RunningApp,
} from './upstream-helpers.js';

const digest = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

@WebPubSubHub('bodies')
class BodiesHub {
  /** Describes what arrived, so large bodies need not travel back. */
  @OnUserEvent()
  describe(@EventData() data: unknown, @EventContext() context: WebPubSubContext) {
    if (Buffer.isBuffer(data)) return { kind: 'buffer', length: data.length, sha256: digest(data) };
    if (typeof data === 'string' && data.length > 1000) {
      return { kind: 'string', length: data.length, dataType: context.dataType };
    }
    return { kind: typeof data, value: data === null ? 'null' : data, dataType: context.dataType };
  }
}

/** An ordinary route of the same app: its JSON must still be parsed by Nest as usual. */
@Controller('other')
class OtherController {
  @Post()
  echo(@Body() body: unknown) {
    return { received: body };
  }
}

@Module({
  imports: [WebPubSubModule.forRoot({ connectionString: CONNECTION_STRING })],
  controllers: [OtherController],
  providers: [BodiesHub],
})
class BodiesModule {}

const MiB = 1024 * 1024;

const cases = ADAPTERS.flatMap((adapter) =>
  (
    [
      ['NestFactory.create', undefined],
      ['Test.createTestingModule', undefined],
      ['NestFactory.create', 'api'],
      ['Test.createTestingModule', 'api/v1'],
    ] as Array<[Flow, string | undefined]>
  ).map(([flow, prefix]) => [adapter, flow, prefix] as const),
);

describe.each(cases)(
  'bodies on %s in an app made with %s, global prefix %s',
  (adapter, flow, prefix) => {
    let running: RunningApp;
    const path = `${prefix ? `/${prefix}` : ''}/eventhandler`;
    const send = (contentType: string, body: string | Uint8Array) =>
      sendEvent(running.url, { hub: 'bodies', event: 'data', contentType }, body, path);

    beforeAll(async () => {
      running = await startApp(BodiesModule, { flow, prefix, adapter });
    });
    afterAll(() => running.close());

    it('keeps UTF-8 text intact', async () => {
      const res = await send('text/plain; charset=utf-8', 'naïve café — 日本語 🎉');
      expect(res.json()).toEqual({
        kind: 'string',
        value: 'naïve café — 日本語 🎉',
        dataType: 'text',
      });
    });

    it('keeps every byte of a binary body', async () => {
      const bytes = new Uint8Array(512).map((_, i) => i % 256);
      const res = await send('application/octet-stream', bytes);
      expect(res.json()).toEqual({ kind: 'buffer', length: 512, sha256: digest(bytes) });
    });

    it.each([
      ['"hello"', 'string', 'hello'],
      ['42', 'number', 42],
      ['true', 'boolean', true],
      ['null', 'object', 'null'],
      ['[1,"a"]', 'object', [1, 'a']],
    ])(
      'passes bare JSON %s, which the strict default parser would refuse',
      async (body, kind, value) => {
        const res = await send('application/json', body);
        expect(res.status).toBe(200);
        expect(res.json()).toEqual({ kind, value, dataType: 'json' });
      },
    );

    it('accepts JSON far above the 100 kb Express default', async () => {
      const text = 'x'.repeat(600 * 1024);
      const res = await send('application/json', JSON.stringify(text));
      expect(res.json()).toEqual({ kind: 'string', length: text.length, dataType: 'json' });
    });

    it('accepts exactly maxBodySize (1 MiB) and refuses one byte more with 413', async () => {
      const limit = new Uint8Array(MiB).fill(7);
      const ok = await send('application/octet-stream', limit);
      expect(ok.json()).toMatchObject({ kind: 'buffer', length: MiB });
      const over = await send('application/octet-stream', new Uint8Array(MiB + 1));
      expect(over.status).toBe(413);
      expect(over.json().message).toBe(`Request body is larger than ${MiB} bytes`);
    });

    it('leaves the other routes of the app to Nest’s own body parser', async () => {
      const res = await fetch(`${running.url}${prefix ? `/${prefix}` : ''}/other`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ a: 1 }),
      });
      expect(await res.json()).toEqual({ received: { a: 1 } });
    });
  },
);

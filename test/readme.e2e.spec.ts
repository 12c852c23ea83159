/** The README's testing example, word for word, against the README's quick start. */
import type { INestApplication } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmulator, type WebPubSubEmulator } from 'nestjs-web-pubsub/emulator';
import { WebPubSubTestClient } from 'nestjs-web-pubsub/testing';

describe('ChatHub', () => {
  let emulator: WebPubSubEmulator;
  let app: INestApplication;

  beforeAll(async () => {
    // The hub client sends through the local emulator instead of Azure.
    emulator = await startEmulator({ port: 0, logLevel: 'warn' });
    process.env.WEBPUBSUB_CONNECTION_STRING = emulator.connectionString;
    const { AppModule } = await import('./readme-app.js'); // reads the variable
    const moduleRef = await Test.createTestingModule({ imports: [AppModule] }).compile();
    app = moduleRef.createNestApplication({ logger: ['error', 'warn'] });
  });

  afterAll(async () => {
    await app.close();
    await emulator.close();
  });

  it('greets a user and answers their messages', async () => {
    const client = new WebPubSubTestClient(app, {
      hub: 'chat',
      connectionString: emulator.connectionString, // signs with its key
    });
    const connect = await client.connect({ query: { user: ['ann'] } });
    expect(connect.status).toBe(200);
    expect(client.userId).toBe('ann');
    expect(client.states).toMatchObject({ joinedAt: expect.any(Number) });

    const reply = await client.event('say', { text: 'hi' }); // JSON; strings go as text
    expect(reply.data).toEqual({ ok: true });

    expect((await client.event('say', { text: 'x'.repeat(501) })).status).toBe(400); // DTO
    expect((await client.disconnected('bye')).status).toBe(204);
  });
});

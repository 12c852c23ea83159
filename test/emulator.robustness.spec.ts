/** The emulator survives malformed requests from anyone who can reach its port. */
import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebPubSubServiceClient } from '@azure/web-pubsub';
import WebSocket from 'ws';
import { startEmulator, type WebPubSubEmulator } from 'nestjs-web-pubsub/emulator';

let emulator: WebPubSubEmulator;
beforeAll(async () => {
  emulator = await startEmulator({ port: 0, host: '127.0.0.1', logLevel: 'silent' });
});
afterAll(() => emulator.close());

/** Sends raw bytes and returns the status line of the answer. */
const raw = (request: string) =>
  new Promise<string>((resolve, reject) => {
    const socket = connect(emulator.port, '127.0.0.1', () => socket.end(request));
    let data = '';
    socket.on('data', (chunk) => (data += chunk.toString('latin1')));
    socket.on('end', () => resolve(data.split('\r\n')[0] ?? ''));
    socket.on('error', reject);
  });

describe('emulator robustness', () => {
  it('answers 400 to a REST request with a malformed Host, and keeps running', async () => {
    expect(await raw('GET /api/health HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n')).toBe(
      'HTTP/1.1 400 Bad Request',
    );
    const health = await fetch(`${emulator.url}/api/health`, { method: 'HEAD' });
    expect(health.status).toBe(200);
  });

  it('refuses a sendToGroup-mode client without a group at the handshake', async () => {
    const service = new WebPubSubServiceClient(emulator.connectionString, 'chat', {
      allowInsecureConnection: true,
    });
    const { url } = await service.getClientAccessToken({ roles: ['webpubsub.sendToGroup'] });
    const status = await new Promise<number>((resolve, reject) => {
      const socket = new WebSocket(`${url}&webpubsub_mode=sendToGroup`);
      socket.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      socket.once('open', () => reject(new Error('accepted')));
      socket.once('error', () => undefined);
    });
    expect(status).toBe(400);
  });

  it('closes a simple client that floods a slow event handler with 1008', async () => {
    // An event handler that validates but never answers events.
    const stalled = createServer((req, res) => {
      if (req.method === 'OPTIONS') res.writeHead(200, { 'WebHook-Allowed-Origin': '*' }).end();
    });
    await new Promise<void>((resolve) => stalled.listen(0, '127.0.0.1', resolve));
    const port = (stalled.address() as AddressInfo).port;
    emulator.setEventHandlers(
      { urlTemplate: `http://127.0.0.1:${port}/eventhandler`, systemEvents: [] },
      'flood',
    );
    try {
      const service = new WebPubSubServiceClient(emulator.connectionString, 'flood', {
        allowInsecureConnection: true,
      });
      const { url } = await service.getClientAccessToken();
      const socket = new WebSocket(url);
      await new Promise((resolve) => socket.once('open', resolve));
      const closed = new Promise<number>((resolve) =>
        socket.once('close', (code) => resolve(code)),
      );
      for (let i = 0; i < 1_100 && socket.readyState === WebSocket.OPEN; i++)
        socket.send(`frame ${i}`);
      expect(await closed).toBe(1008);
    } finally {
      stalled.closeAllConnections();
      await new Promise((resolve) => stalled.close(resolve));
    }
  });
});

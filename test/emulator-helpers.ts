/**
 * Test helpers for the emulator specs: a plain `node:http` event handler that records what the
 * emulator sends, and a raw `ws` client with awaitable frames. Nothing here waits on a timer:
 * every wait resolves on an event, and vitest's test timeout is the only deadline.
 */
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocket, type RawData } from 'ws';
import {
  startEmulator,
  type EmulatorOptions,
  type WebPubSubEmulator,
} from 'nestjs-web-pubsub/emulator';

export const TEST_KEY = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH';
export const SECONDARY_KEY = 'secondary-key-0123456789abcdef0123456789';

/** An emulator on a random loopback port, quiet unless the test passes its own logger. */
export function startTestEmulator(options: EmulatorOptions = {}): Promise<WebPubSubEmulator> {
  return startEmulator({ host: '127.0.0.1', port: 0, logLevel: 'silent', ...options });
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface HandlerReply {
  status?: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

type Waiter = { match: (r: RecordedRequest) => boolean; resolve: (r: RecordedRequest) => void };

/**
 * A tiny event handler. By default it passes the abuse-protection check and answers every event
 * 204; `respond` overrides that per request (and may be async to hold a request back).
 */
export class UpstreamServer {
  readonly requests: RecordedRequest[] = [];
  respond: (
    request: RecordedRequest,
  ) => HandlerReply | undefined | Promise<HandlerReply | undefined> = () => undefined;
  private readonly server: Server;
  private waiters: Waiter[] = [];
  url = '';

  constructor() {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', async () => {
        const recorded: RecordedRequest = {
          method: req.method ?? '',
          url: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(chunks),
        };
        this.requests.push(recorded);
        this.waiters = this.waiters.filter(
          (w) => !(w.match(recorded) && (w.resolve(recorded), true)),
        );
        const reply =
          (await this.respond(recorded)) ??
          (recorded.method === 'OPTIONS'
            ? { status: 200, headers: { 'WebHook-Allowed-Origin': '*' } }
            : { status: 204 });
        res.writeHead(reply.status ?? 200, reply.headers).end(reply.body);
      });
    });
  }

  async start(): Promise<this> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** Event POSTs only (no abuse-protection checks). */
  events(eventName?: string): RecordedRequest[] {
    return this.requests.filter(
      (r) => r.method === 'POST' && (!eventName || r.headers['ce-eventname'] === eventName),
    );
  }

  /** Resolves with the first request, past or future, that matches. */
  waitFor(match: (r: RecordedRequest) => boolean): Promise<RecordedRequest> {
    const seen = this.requests.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => this.waiters.push({ match, resolve }));
  }

  waitForEvent(eventName: string, connectionId?: string): Promise<RecordedRequest> {
    return this.waitFor(
      (r) =>
        r.method === 'POST' &&
        r.headers['ce-eventname'] === eventName &&
        (!connectionId || r.headers['ce-connectionid'] === connectionId),
    );
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

export interface Frame {
  data: Buffer;
  isBinary: boolean;
  text: string;
  /** The parsed JSON frame, for the JSON protocols. */
  json: any;
}

/** A raw WebSocket client whose frames can be awaited one by one. */
export class RawClient {
  private readonly frames: Frame[] = [];
  private readers: Array<(frame: Frame) => void> = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: RawData, isBinary: boolean) => {
      const buffer = Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer);
      const text = buffer.toString('utf8');
      let json: unknown;
      try {
        json = isBinary ? undefined : JSON.parse(text);
      } catch {
        json = undefined;
      }
      const frame = { data: buffer, isBinary, text, json };
      const reader = this.readers.shift();
      if (reader) reader(frame);
      else this.frames.push(frame);
    });
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString('utf8') })),
    );
  }

  static async connect(url: string, protocols?: string | string[]): Promise<RawClient> {
    const ws = new WebSocket(url, protocols);
    const client = new RawClient(ws);
    await once(ws, 'open');
    return client;
  }

  next(): Promise<Frame> {
    const frame = this.frames.shift();
    if (frame) return Promise.resolve(frame);
    return new Promise((resolve) => this.readers.push(resolve));
  }

  /** The next frame that is not a pong or an ack the test does not care about. */
  async nextJson(skip: (json: any) => boolean = () => false): Promise<any> {
    for (;;) {
      const frame = await this.next();
      if (!skip(frame.json)) return frame.json;
    }
  }

  send(data: unknown): void {
    this.ws.send(typeof data === 'string' || Buffer.isBuffer(data) ? data : JSON.stringify(data));
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.terminate();
    }
  }
}

/** The HTTP status of a handshake the emulator refuses (it never upgrades). */
export async function handshakeStatus(url: string, protocols?: string[]): Promise<number> {
  const ws = new WebSocket(url, protocols);
  return new Promise((resolve, reject) => {
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      ws.terminate();
      reject(new Error('the handshake was accepted'));
    });
    ws.on('error', () => undefined);
  });
}

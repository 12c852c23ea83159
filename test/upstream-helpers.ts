/** Shared by the upstream e2e specs: start a real Nest app, send signed CloudEvents over HTTP. */
import type { INestApplication, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import { encodeConnectionState, type WebPubSubEventKind } from 'nestjs-web-pubsub';
import { createEventHeaders } from 'nestjs-web-pubsub/testing';

export const KEY = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH';
export const SECONDARY_KEY = 'secondary-key-0123456789abcdef0123456789';
export const CONNECTION_STRING = `Endpoint=http://localhost:8080;AccessKey=${KEY};Version=1.0;`;

export type Flow = 'NestFactory.create' | 'Test.createTestingModule';
export type AdapterName = 'express' | 'fastify';
/** Every e2e spec of the module runs over both adapters. */
export const ADAPTERS: AdapterName[] = ['express', 'fastify'];

export const createAdapter = (name: AdapterName) =>
  name === 'fastify' ? new FastifyAdapter() : new ExpressAdapter();

export interface RunningApp {
  app: INestApplication;
  url: string;
  close(): Promise<void>;
}

/** Starts the module on a random port, created the way users create apps: no body-parser options. */
export async function startApp(
  module: Type<unknown>,
  {
    flow = 'NestFactory.create',
    prefix,
    adapter = 'express',
  }: { flow?: Flow; prefix?: string; adapter?: AdapterName } = {},
): Promise<RunningApp> {
  const app =
    flow === 'NestFactory.create'
      ? await NestFactory.create(module, createAdapter(adapter), { logger: false })
      : (await Test.createTestingModule({ imports: [module] }).compile()).createNestApplication(
          createAdapter(adapter),
          { logger: false },
        );
  if (prefix) app.setGlobalPrefix(prefix);
  await app.listen(0, '127.0.0.1');
  const url = (await app.getUrl()).replace('[::1]', '127.0.0.1');
  return { app, url, close: () => app.close() };
}

export interface EventOptions {
  hub?: string;
  /** `connect`, `connected`, `disconnected`, `joined`, `left`, or a user event name. */
  event?: string;
  type?: string;
  connectionId?: string;
  userId?: string;
  subprotocol?: string;
  states?: Record<string, unknown>;
  key?: string | null;
  contentType?: string;
  headers?: Record<string, string>;
  omit?: string[];
}

const KINDS: Record<string, WebPubSubEventKind> = {
  connect: 'connect',
  connected: 'connected',
  disconnected: 'disconnected',
  joined: 'groupJoined',
  left: 'groupLeft',
};

/** The headers the service sends for one event, with the overrides a spec asks for. */
export function eventHeaders(options: EventOptions = {}): Record<string, string> {
  const event = options.event ?? 'connect';
  const kind = KINDS[event] ?? 'user';
  const headers = createEventHeaders({
    hub: options.hub ?? 'chat',
    connectionId: options.connectionId ?? 'conn1',
    kind,
    event,
    accessKeys: options.key === null ? [] : [options.key ?? KEY],
    userId: options.userId,
    subprotocol: options.subprotocol,
    connectionState: options.states && encodeConnectionState(options.states),
    eventId: 1,
    contentType: options.contentType ?? (kind === 'user' ? 'text/plain' : undefined),
  });
  if (options.type) headers['ce-type'] = options.type;
  Object.assign(headers, options.headers);
  for (const name of options.omit ?? []) {
    for (const key of Object.keys(headers)) {
      if (key.toLowerCase() === name.toLowerCase()) delete headers[key];
    }
  }
  return headers;
}

export interface EventResult {
  status: number;
  headers: Headers;
  body: Buffer;
  text: string;
  json(): any;
}

/** POSTs one event and reads the whole answer. */
export async function sendEvent(
  url: string,
  options: EventOptions = {},
  body: string | Uint8Array | object = '',
  path = '/eventhandler',
): Promise<EventResult> {
  const payload =
    typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
  const response = await fetch(url + path, {
    method: 'POST',
    headers: eventHeaders(options),
    body: payload as RequestInit['body'],
  });
  const bytes = Buffer.from(await response.arrayBuffer());
  return {
    status: response.status,
    headers: response.headers,
    body: bytes,
    text: bytes.toString('utf8'),
    json: () => JSON.parse(bytes.toString('utf8')),
  };
}

export const connectBody = (extra: Record<string, unknown> = {}) => ({
  claims: {},
  query: {},
  headers: {},
  subprotocols: [],
  clientCertificates: [],
  ...extra,
});

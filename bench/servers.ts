/**
 * The servers under test, each answering the same signed CloudEvents on 127.0.0.1:
 * (a) bare node:http, (b) a bare Nest controller per adapter doing the work by hand,
 * (c) this module per adapter, (d) @azure/web-pubsub-express on Express.
 * Each is loaded on demand, so a server process holds only its own dependencies (RSS compares).
 */
import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UPSTREAM_PATH, type WorkloadName } from './workloads.js';

export type ServerName =
  | 'node-http'
  | 'nest-express'
  | 'nest-fastify'
  | 'module-express'
  | 'module-fastify'
  | 'azure-express';

export interface ServerSpec {
  name: ServerName;
  /** Which comparison the server is: a, b, c or d in the report. */
  role: 'a' | 'b' | 'c' | 'd';
  adapter?: 'express' | 'fastify';
  label: string;
  workloads: readonly WorkloadName[];
  /** Where a workload's requests go (bare Nest routes have one route per kind of work). */
  pathFor(workload: WorkloadName): string;
  /** False for the peer package, which does not check `ce-signature`. */
  verifiesSignature: boolean;
}

const ALL_WORKLOADS: readonly WorkloadName[] = ['text-64B', 'text-64KiB', 'json-dto', 'connect'];
const sharedPath = () => UPSTREAM_PATH;
const routePerWork = (workload: WorkloadName) =>
  `${UPSTREAM_PATH}/${workload === 'connect' ? 'connect' : workload === 'json-dto' ? 'validated' : 'echo'}`;

export const SERVERS: Record<ServerName, ServerSpec> = {
  'node-http': {
    name: 'node-http',
    role: 'a',
    label: '(a) bare node:http',
    workloads: ALL_WORKLOADS,
    pathFor: sharedPath,
    verifiesSignature: true,
  },
  'nest-express': {
    name: 'nest-express',
    role: 'b',
    adapter: 'express',
    label: '(b) bare Nest, Express',
    workloads: ALL_WORKLOADS,
    pathFor: routePerWork,
    verifiesSignature: true,
  },
  'nest-fastify': {
    name: 'nest-fastify',
    role: 'b',
    adapter: 'fastify',
    label: '(b) bare Nest, Fastify',
    workloads: ALL_WORKLOADS,
    pathFor: routePerWork,
    verifiesSignature: true,
  },
  'module-express': {
    name: 'module-express',
    role: 'c',
    adapter: 'express',
    label: '(c) module, Express',
    workloads: ALL_WORKLOADS,
    pathFor: sharedPath,
    verifiesSignature: true,
  },
  'module-fastify': {
    name: 'module-fastify',
    role: 'c',
    adapter: 'fastify',
    label: '(c) module, Fastify',
    workloads: ALL_WORKLOADS,
    pathFor: sharedPath,
    verifiesSignature: true,
  },
  'azure-express': {
    name: 'azure-express',
    role: 'd',
    adapter: 'express',
    label: '(d) @azure/web-pubsub-express',
    // It has no DTO validation to compare with.
    workloads: ['text-64B', 'text-64KiB', 'connect'],
    pathFor: sharedPath,
    verifiesSignature: false,
  },
};

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

export function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export function listening(server: Server): Promise<RunningServer> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () => new Promise((done) => server.close(() => done())),
      }),
    );
  });
}

export async function startServer(name: ServerName): Promise<RunningServer> {
  switch (name) {
    case 'node-http':
      return (await import('./server-node-http.js')).startNodeHttp();
    case 'nest-express':
    case 'nest-fastify':
      return (await import('./server-nest-bare.js')).startBareNest(SERVERS[name].adapter!);
    case 'module-express':
    case 'module-fastify':
      return (await import('./server-nest-module.js')).startModule(SERVERS[name].adapter!);
    case 'azure-express':
      return (await import('./server-azure.js')).startAzureExpress();
  }
}

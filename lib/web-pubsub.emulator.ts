/**
 * A local Azure Web PubSub emulator in TypeScript: the REST API `@azure/web-pubsub` calls, the
 * WebSocket endpoint `@azure/web-pubsub-client` (and raw clients) connect to, and signed
 * CloudEvents delivery to the app's event handler. No Azure account, .NET or Docker needed.
 *
 * ```ts
 * const emulator = await startEmulator({
 *   port: 0,
 *   hubs: { chat: [{ urlTemplate: 'http://localhost:3000/eventhandler' }] },
 * });
 * const service = new WebPubSubServiceClient(emulator.connectionString, 'chat', {
 *   allowInsecureConnection: true,
 * });
 * await emulator.close();
 * ```
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Logger, type LoggerService } from '@nestjs/common';
import { ClientEndpoint } from './web-pubsub.emulator-clients.js';
import { HubRegistry } from './web-pubsub.emulator-hubs.js';
import { RestApi } from './web-pubsub.emulator-rest.js';
import {
  SYSTEM_EVENTS,
  UpstreamDispatcher,
  type EventHandlerSetting,
  type SystemEventName,
} from './web-pubsub.emulator-upstream.js';

export type { EventHandlerSetting, SystemEventName };

/** The key Microsoft's emulator uses too, so one connection string works with both. */
export const DEFAULT_EMULATOR_ACCESS_KEY = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH';
export const DEFAULT_EMULATOR_PORT = 8080;
export const DEFAULT_EMULATOR_HOST = 'localhost';

export type EmulatorLogLevel = 'silent' | 'error' | 'warn' | 'log' | 'debug' | 'verbose';

const LEVEL_RANK: Record<EmulatorLogLevel, number> = {
  silent: 0,
  error: 1,
  warn: 2,
  log: 3,
  debug: 4,
  verbose: 5,
};

export const EMULATOR_LOG_LEVELS = Object.keys(LEVEL_RANK) as EmulatorLogLevel[];

/** One handler setting or several; several are tried in order and the first match wins. */
export type EventHandlerSettings = EventHandlerSetting | readonly EventHandlerSetting[];

export interface EmulatorOptions {
  /** TCP port; `0` picks a free one. Default 8080. */
  port?: number;
  /** Interface to listen on and host of the URLs. Default `localhost`. */
  host?: string;
  /** Primary access key. Default {@link DEFAULT_EMULATOR_ACCESS_KEY}. */
  accessKey?: string;
  /** Optional secondary key: tokens signed with it are accepted, `ce-signature` carries both. */
  secondaryAccessKey?: string;
  /** Event handler settings per hub name (case-insensitive). A hub listed here ignores `eventHandlers`. */
  hubs?: Record<string, EventHandlerSettings>;
  /** Event handler settings for every hub not listed in `hubs`. */
  eventHandlers?: EventHandlerSettings;
  /** Where logs go: any Nest `LoggerService`. Default: a Nest `Logger` named `WebPubSubEmulator`. */
  logger?: LoggerService;
  /** The most detailed level written. Default `log`; `debug` traces every client and upstream exchange. */
  logLevel?: EmulatorLogLevel;
}

export interface WebPubSubEmulator {
  /** `http://host:port`, no trailing slash. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly accessKey: string;
  /** `Endpoint=…;AccessKey=…;Version=1.0;` for `WebPubSubServiceClient` (pass `allowInsecureConnection: true`). */
  readonly connectionString: string;
  /**
   * Replaces the event handler settings of one hub, or the default ones of every hub not listed
   * in `hubs`: for apps whose URL is known only once they listen (e.g. on port 0).
   */
  setEventHandlers(settings: EventHandlerSettings, hub?: string): void;
  /** Ends every client socket and handshake, aborts upstream requests and stops the server. */
  close(): Promise<void>;
}

/** The logger the emulator's parts write to, already filtered by level. */
export interface EmulatorLog {
  error(message: string): void;
  warn(message: string): void;
  log(message: string): void;
  debug(message: string): void;
}

const noop = (): void => undefined;

function createLog(logger: LoggerService, level: EmulatorLogLevel): EmulatorLog {
  const rank = LEVEL_RANK[level];
  return {
    error: rank >= LEVEL_RANK.error ? (m) => logger.error(m) : noop,
    warn: rank >= LEVEL_RANK.warn ? (m) => logger.warn(m) : noop,
    log: rank >= LEVEL_RANK.log ? (m) => logger.log(m) : noop,
    debug: rank >= LEVEL_RANK.debug ? (m) => (logger.debug ?? logger.log).call(logger, m) : noop,
  };
}

function toList(settings: EventHandlerSettings | undefined): readonly EventHandlerSetting[] {
  if (!settings) return [];
  return Array.isArray(settings) ? settings : [settings as EventHandlerSetting];
}

function validateSettings(settings: readonly EventHandlerSetting[], where: string): void {
  for (const setting of settings) {
    if (!URL.canParse(setting.urlTemplate.replace(/\{(hub|event)\}/gi, 'x'))) {
      throw new TypeError(`${where}: "${setting.urlTemplate}" is not a URL template`);
    }
    for (const event of setting.systemEvents ?? []) {
      if (!SYSTEM_EVENTS.includes(event)) {
        throw new TypeError(
          `${where}: unknown system event "${event}" (${SYSTEM_EVENTS.join(', ')})`,
        );
      }
    }
  }
}

/** `Endpoint=http://host:port;AccessKey=…;Version=1.0;` */
export const emulatorConnectionString = (url: string, accessKey: string): string =>
  `Endpoint=${url};AccessKey=${accessKey};Version=1.0;`;

/** Starts the emulator and resolves once it listens. */
export async function startEmulator(options: EmulatorOptions = {}): Promise<WebPubSubEmulator> {
  const accessKey = options.accessKey ?? DEFAULT_EMULATOR_ACCESS_KEY;
  const accessKeys = options.secondaryAccessKey
    ? [accessKey, options.secondaryAccessKey]
    : [accessKey];
  const host = options.host ?? DEFAULT_EMULATOR_HOST;
  const log = createLog(
    options.logger ?? new Logger('WebPubSubEmulator'),
    options.logLevel ?? 'log',
  );

  const hubSettings = new Map<string, readonly EventHandlerSetting[]>();
  for (const [hub, settings] of Object.entries(options.hubs ?? {})) {
    const list = toList(settings);
    validateSettings(list, `hubs.${hub}`);
    hubSettings.set(hub.toLowerCase(), list);
  }
  let defaultSettings = toList(options.eventHandlers);
  validateSettings(defaultSettings, 'eventHandlers');

  const server: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? DEFAULT_EMULATOR_PORT, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const url = `http://${urlHost}:${port}`;

  const keys = accessKeys.map((key) => new TextEncoder().encode(key));
  const hubs = new HubRegistry();
  const upstream = new UpstreamDispatcher(
    (hub) => hubSettings.get(hub.toLowerCase()) ?? defaultSettings,
    accessKeys,
    new URL(url).host,
    log,
  );
  const rest = new RestApi({ hubs, keys, primaryKey: accessKey, baseUrl: url, log });
  const clients = new ClientEndpoint({ hubs, upstream, keys, log });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (req.url?.startsWith('/api/')) {
      rest.handle(req, res).catch((err: unknown) => {
        log.error(`REST request failed: ${String(err)}`);
        if (!res.headersSent) res.writeHead(500).end();
      });
    } else if (req.url?.startsWith('/client/')) {
      res.writeHead(426, { 'content-type': 'text/plain' }).end('Upgrade to WebSocket required');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Not found');
    }
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
    clients.handleUpgrade(req, socket, head),
  );
  server.on('clientError', (err, socket) => {
    log.debug(`Malformed HTTP request: ${err.message}`);
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  });

  log.log(`Web PubSub emulator listening on ${url}`);

  let closing: Promise<void> | undefined;
  return {
    url,
    host,
    port,
    accessKey,
    connectionString: emulatorConnectionString(url, accessKey),
    setEventHandlers(settings, hub) {
      const list = toList(settings);
      validateSettings(list, hub ? `hubs.${hub}` : 'eventHandlers');
      if (hub) hubSettings.set(hub.toLowerCase(), list);
      else defaultSettings = list;
    },
    close() {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        upstream.close();
        await clients.close();
        server.closeAllConnections();
        await stopped;
        log.debug('Web PubSub emulator stopped');
      })();
      return closing;
    },
  };
}

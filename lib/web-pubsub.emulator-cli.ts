#!/usr/bin/env node
/**
 * `web-pubsub-emulator`: runs the local Web PubSub emulator until Ctrl+C.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  DEFAULT_EMULATOR_ACCESS_KEY,
  DEFAULT_EMULATOR_HOST,
  DEFAULT_EMULATOR_PORT,
  EMULATOR_LOG_LEVELS,
  startEmulator,
  type EmulatorLogLevel,
  type EmulatorOptions,
  type EventHandlerSetting,
} from './web-pubsub.emulator.js';

export const USAGE = `Usage: web-pubsub-emulator [options]

A local Azure Web PubSub service: REST API, WebSocket clients and event handler delivery.

Options:
  -p, --port <port>            port to listen on (default ${DEFAULT_EMULATOR_PORT}; 0 picks a free one)
      --host <host>            interface to listen on (default ${DEFAULT_EMULATOR_HOST})
      --key <key>              primary access key (default: the key of Microsoft's emulator)
      --secondary-key <key>    secondary access key, also accepted and signed with
      --upstream <template>    event handler URL for every hub not given with --hub,
                               e.g. http://localhost:3000/api/webpubsub/hubs/{hub}/  (repeatable);
                               "<hub>=<template>" is the same as --hub
      --hub <hub>=<template>   event handler URL for one hub; "*=<template>" is the same as
                               --upstream (repeatable; settings are tried in order)
      --log-level <level>      ${EMULATOR_LOG_LEVELS.join(', ')} (default log; debug shows every exchange)
  -h, --help                   show this help

{hub} and {event} in a URL template are replaced per event. Every handler receives all user
events and the connect, connected and disconnected system events.`;

export class CliUsageError extends Error {
  override name = 'CliUsageError';
}

/** Turns command-line arguments into emulator options, or `'help'`. */
export function parseEmulatorArgs(argv: readonly string[]): EmulatorOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        port: { type: 'string', short: 'p' },
        host: { type: 'string' },
        key: { type: 'string' },
        'secondary-key': { type: 'string' },
        upstream: { type: 'string', multiple: true },
        hub: { type: 'string', multiple: true },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new CliUsageError((err as Error).message);
  }
  if (values.help) return 'help';

  const options: EmulatorOptions = {};
  if (values.port !== undefined) {
    const port = Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new CliUsageError(`--port must be a port number, not "${values.port}"`);
    }
    options.port = port;
  }
  if (values.host) options.host = values.host;
  if (values.key) options.accessKey = values.key;
  if (values['secondary-key']) options.secondaryAccessKey = values['secondary-key'];
  const level = values['log-level'];
  if (level !== undefined) {
    if (!EMULATOR_LOG_LEVELS.includes(level as EmulatorLogLevel)) {
      throw new CliUsageError(`--log-level must be one of ${EMULATOR_LOG_LEVELS.join(', ')}`);
    }
    options.logLevel = level as EmulatorLogLevel;
  }

  const catchAll: EventHandlerSetting[] = [];
  const hubs: Record<string, EventHandlerSetting[]> = {};
  // `--upstream chat=<url>` is `--hub chat=<url>`; a bare URL (even one with `=` in its query) is for every hub.
  const perHub = [
    ...(values.upstream ?? []).filter((entry) => {
      if (/^(\*|[A-Za-z][A-Za-z0-9_`,.[\]]*)=/.test(entry)) return true;
      catchAll.push({ urlTemplate: entry });
      return false;
    }),
    ...(values.hub ?? []),
  ];
  for (const entry of perHub) {
    const eq = entry.indexOf('=');
    const hub = entry.slice(0, eq).trim();
    const urlTemplate = entry.slice(eq + 1).trim();
    if (eq <= 0 || !urlTemplate) {
      throw new CliUsageError(`--hub expects <hub>=<urlTemplate>, not "${entry}"`);
    }
    if (hub === '*') catchAll.push({ urlTemplate });
    else (hubs[hub] ??= []).push({ urlTemplate });
  }
  if (catchAll.length) options.eventHandlers = catchAll;
  if (Object.keys(hubs).length) options.hubs = hubs;
  return options;
}

async function main(): Promise<void> {
  let options: EmulatorOptions | 'help';
  try {
    options = parseEmulatorArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  if (options === 'help') {
    console.log(USAGE);
    return;
  }
  const emulator = await startEmulator(options);
  const handlers = [
    ...Object.entries(options.hubs ?? {}).flatMap(([hub, settings]) =>
      (settings as EventHandlerSetting[]).map((s) => `  hub ${hub}: ${s.urlTemplate}`),
    ),
    ...((options.eventHandlers as EventHandlerSetting[] | undefined) ?? []).map(
      (s) => `  every other hub: ${s.urlTemplate}`,
    ),
  ];
  console.log(
    [
      '',
      `Web PubSub emulator running at ${emulator.url}`,
      '',
      'Connection string:',
      `  ${emulator.connectionString}`,
      ...(emulator.accessKey === DEFAULT_EMULATOR_ACCESS_KEY
        ? ['  (the default emulator key)']
        : []),
      'Event handlers:',
      ...(handlers.length ? handlers : ['  none: connections are accepted on their token alone']),
      '',
      'Create WebPubSubServiceClient with { allowInsecureConnection: true }. Ctrl+C stops.',
      '',
    ].join('\n'),
  );
  const stop = () => {
    void emulator.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

// Run only as a program (npm links the bin, hence realpath), not when imported by tests.
const entry = process.argv[1];
if (entry && realpathSync(entry) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}

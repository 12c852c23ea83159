import { WebPubSubServiceClient } from '@azure/web-pubsub';
import { startEmulator } from 'nestjs-web-pubsub/emulator';
import { describe, expect, it } from 'vitest';
import { CliUsageError, parseEmulatorArgs, USAGE } from '../lib/web-pubsub.emulator-cli.js';

describe('web-pubsub-emulator command line', () => {
  it('maps every flag to an emulator option', () => {
    expect(
      parseEmulatorArgs([
        '--port',
        '9090',
        '--host',
        '0.0.0.0',
        '--key',
        'k1',
        '--secondary-key',
        'k2',
        '--upstream',
        'http://localhost:3000/api/{hub}/{event}',
        '--hub',
        'chat=http://localhost:3000/chat',
        '--hub',
        'chat=http://localhost:4000/chat',
        '--hub',
        '*=http://localhost:5000/all',
        '--upstream',
        'other=http://localhost:6000/other?code=1',
        '--upstream',
        'http://localhost:7000/{event}?code=x=y',
        '--log-level',
        'debug',
      ]),
    ).toEqual({
      port: 9090,
      host: '0.0.0.0',
      accessKey: 'k1',
      secondaryAccessKey: 'k2',
      logLevel: 'debug',
      eventHandlers: [
        { urlTemplate: 'http://localhost:3000/api/{hub}/{event}' },
        { urlTemplate: 'http://localhost:7000/{event}?code=x=y' },
        { urlTemplate: 'http://localhost:5000/all' },
      ],
      hubs: {
        other: [{ urlTemplate: 'http://localhost:6000/other?code=1' }],
        chat: [
          { urlTemplate: 'http://localhost:3000/chat' },
          { urlTemplate: 'http://localhost:4000/chat' },
        ],
      },
    });
  });

  it('uses the defaults with no flags and shows help on request', () => {
    expect(parseEmulatorArgs([])).toEqual({});
    expect(parseEmulatorArgs(['-h'])).toBe('help');
    expect(USAGE).toMatch(/--hub <hub>=<template>/);
  });

  it.each([
    [['--port', 'eighty']],
    [['--port', '70000']],
    [['--hub', 'no-url']],
    [['--hub', '=http://x']],
    [['--log-level', 'loud']],
    [['--unknown']],
    [['positional']],
  ])('refuses %j with a usage error', (args) => {
    expect(() => parseEmulatorArgs(args)).toThrow(CliUsageError);
  });

  it('starts an emulator from parsed options', async () => {
    const options = parseEmulatorArgs([
      '--port',
      '0',
      '--host',
      '127.0.0.1',
      '--log-level',
      'silent',
    ]);
    expect(options).not.toBe('help');
    const emulator = await startEmulator(options as Exclude<typeof options, 'help'>);
    try {
      const service = new WebPubSubServiceClient(emulator.connectionString, 'chat', {
        allowInsecureConnection: true,
      });
      expect(await service.userExists('nobody')).toBe(false);
    } finally {
      await emulator.close();
    }
  });

  it('refuses an invalid handler URL at start-up', async () => {
    await expect(
      startEmulator({
        port: 0,
        host: '127.0.0.1',
        logLevel: 'silent',
        eventHandlers: { urlTemplate: 'not a url' },
      }),
    ).rejects.toThrow(/not a URL template/);
  });
});

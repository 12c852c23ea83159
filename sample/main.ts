/**
 * The chat sample. `npm start` runs it; without WEBPUBSUB_CONNECTION_STRING it starts the
 * embedded emulator first, so it works with no Azure account.
 */
import { existsSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Logger, type LoggerService, type LogLevel } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { startEmulator, type WebPubSubEmulator } from 'nestjs-web-pubsub/emulator';
import { AppModule } from './app.module.js';

export interface SampleOptions {
  port?: number;
  host?: string;
  /** A real Azure Web PubSub connection string; without one the embedded emulator is used. */
  connectionString?: string;
  logger?: LoggerService | LogLevel[] | false;
}

export interface RunningSample {
  url: string;
  app: NestExpressApplication;
  emulator?: WebPubSubEmulator;
  close(): Promise<void>;
}

const here = dirname(fileURLToPath(import.meta.url));
// Next to the sources, or one level up from the compiled files.
const publicDir = [join(here, 'public'), join(here, '..', 'public')].find((dir) =>
  existsSync(dir),
)!;

export async function startSample(options: SampleOptions = {}): Promise<RunningSample> {
  const host = options.host ?? 'localhost';
  let emulator: WebPubSubEmulator | undefined;
  if (!options.connectionString) {
    emulator = await startEmulator({ port: 0, host, logLevel: 'warn' });
    process.env.WEBPUBSUB_CONNECTION_STRING = emulator.connectionString;
  } else {
    process.env.WEBPUBSUB_CONNECTION_STRING = options.connectionString;
  }

  const app = await NestFactory.create<NestExpressApplication>(AppModule, {
    logger: options.logger ?? ['log', 'warn', 'error'],
  });
  app.useStaticAssets(publicDir);
  app.enableShutdownHooks();
  await app.listen(options.port ?? 3000, host);
  const { port } = app.getHttpServer().address() as AddressInfo;
  const url = `http://${host}:${port}`;

  // The emulator delivers events to this app, like an event handler set in the Azure portal.
  emulator?.setEventHandlers({ urlTemplate: `${url}/eventhandler` });

  return {
    url,
    app,
    emulator,
    close: async () => {
      await app.close();
      await emulator?.close();
    },
  };
}

async function main() {
  const sample = await startSample({
    port: Number(process.env.PORT ?? 3000),
    connectionString: process.env.WEBPUBSUB_CONNECTION_STRING,
  });
  const logger = new Logger('Sample');
  logger.log(
    sample.emulator
      ? `Using the embedded Web PubSub emulator at ${sample.emulator.url}`
      : 'Using Azure Web PubSub from WEBPUBSUB_CONNECTION_STRING',
  );
  logger.log(`Open ${sample.url} in two browser tabs and chat.`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) void main();

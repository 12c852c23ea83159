import { Module, VersioningType, type LoggerService } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { TokenCredential } from '@azure/core-auth';
import { afterEach, describe, expect, it } from 'vitest';
import { OnConnect, WebPubSubHub, WebPubSubModule } from 'nestjs-web-pubsub';
import {
  AppModule,
  calls,
  DuplicateHandlersModule,
  MissingCredentialsModule,
  RequestScopedModule,
} from './upstream-fixtures.js';
import { CONNECTION_STRING, connectBody, sendEvent, type RunningApp } from './upstream-helpers.js';

/** Keeps what the app logs, as a user's logger would receive it. */
class CapturingLogger implements LoggerService {
  readonly lines: Array<{ level: string; message: string }> = [];
  log = (message: string) => this.lines.push({ level: 'log', message });
  error = (message: string) => this.lines.push({ level: 'error', message });
  warn = (message: string) => this.lines.push({ level: 'warn', message });
  debug = (message: string) => this.lines.push({ level: 'debug', message });
  verbose = (message: string) => this.lines.push({ level: 'verbose', message });
  messages = (level: string) => this.lines.filter((l) => l.level === level).map((l) => l.message);
}

let running: RunningApp | undefined;
afterEach(async () => {
  await running?.close();
  running = undefined;
});

async function start(module: new () => unknown, logger = new CapturingLogger()) {
  const app = await NestFactory.create(module, { logger, abortOnError: false });
  await app.listen(0, '127.0.0.1');
  running = { app, url: await app.getUrl(), close: () => app.close() };
  return { url: running.url, logger };
}

const failure = async (module: new () => unknown) => {
  const app = await NestFactory.create(module, { logger: false, abortOnError: false }).catch(
    (err: Error) => err,
  );
  if (app instanceof Error) return app.message;
  const init = await app.init().then(
    () => undefined,
    (err: Error) => err.message,
  );
  await app.close();
  return init;
};

describe('start-up errors', () => {
  it('refuses two handlers for the same event of a hub, naming both methods', async () => {
    expect(await failure(DuplicateHandlersModule)).toBe(
      'Two handlers for the event "user event say" of hub "chat": ChatHub.say and OtherChatHub.alsoSay. Keep one.',
    );
  });

  it('refuses to start without credentials', async () => {
    expect(await failure(MissingCredentialsModule)).toMatch(
      /needs a "connectionString", or an "endpoint" with a "credential"/,
    );
  });

  it('refuses a TokenCredential without access keys to verify signatures with', async () => {
    const credential: TokenCredential = { getToken: async () => null };
    @Module({
      imports: [WebPubSubModule.forRoot({ endpoint: 'https://x.webpubsub.azure.com', credential })],
    })
    class TokenModule {}
    expect(await failure(TokenModule)).toMatch(/no access key to verify ce-signature/);
  });

  it('refuses a malformed connection string with its reason', async () => {
    @Module({ imports: [WebPubSubModule.forRoot({ connectionString: 'Endpoint=https://x;' })] })
    class BadStringModule {}
    expect(await failure(BadStringModule)).toMatch(/Invalid Web PubSub connection string/);
  });

  it.each([
    ['handlerTimeout', -1],
    ['handlerTimeout', 3_000_000_000],
    ['deduplicationWindow', Number.NaN],
  ])('refuses %s = %s', async (name, value) => {
    @Module({
      imports: [WebPubSubModule.forRoot({ connectionString: CONNECTION_STRING, [name]: value })],
    })
    class BadDurationModule {}
    expect(await failure(BadDurationModule)).toMatch(
      new RegExp(`"${name}" must be a number of milliseconds from 0 to 2147483647`),
    );
  });

  it('warns about request-scoped hub classes and skips them', async () => {
    const { url, logger } = await start(RequestScopedModule);
    const warnings = logger.messages('warn');
    expect(
      warnings.some((w) => /ScopedHub is a @WebPubSubHub class but is request-scoped/.test(w)),
    ).toBe(true);
    expect(warnings.some((w) => /ImplicitlyScopedHub is a @WebPubSubHub class/.test(w))).toBe(true);
    expect((await sendEvent(url, { hub: 'scoped' }, connectBody())).status).toBe(404);
  });
});

describe('without signature check', () => {
  @WebPubSubHub('open')
  class OpenHub {
    @OnConnect()
    connect() {
      return { userId: 'u' };
    }
  }
  const credential: TokenCredential = { getToken: async () => null };
  @Module({
    imports: [
      WebPubSubModule.forRoot({
        endpoint: 'https://x.webpubsub.azure.com',
        credential,
        accessKeys: [],
      }),
    ],
    providers: [OpenHub],
  })
  class OpenModule {}

  it('warns at start-up and accepts unsigned events when accessKeys is []', async () => {
    const { url, logger } = await start(OpenModule);
    expect(logger.messages('warn').some((w) => /ce-signature is not verified/.test(w))).toBe(true);
    const res = await sendEvent(url, { hub: 'open', key: null }, connectBody());
    expect(res.status).toBe(200);
  });
});

describe('logging', () => {
  it('writes one debug line per event with hub, event, connection, status and duration', async () => {
    const { url, logger } = await start(AppModule);
    await sendEvent(url, { event: 'echo', connectionId: 'c-7' }, 'hi');
    await sendEvent(url, { event: 'reject', connectionId: 'c-8' });
    const lines = logger.messages('debug').filter((m) => m.startsWith('hub='));
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^hub=chat event=echo connection=c-7 status=200 \d+\.\dms$/);
    expect(lines[1]).toMatch(/^hub=chat event=reject connection=c-8 status=500 /);
    const errors = logger.messages('error');
    expect(
      errors.some((e) =>
        /ChatHub\.reject \(hub "chat", event "reject", connection c-8\) failed: async failure/.test(
          e,
        ),
      ),
    ).toBe(true);
  });
});

describe('with URI versioning and a default version', () => {
  it('keeps the upstream route where it is', async () => {
    const app = await NestFactory.create(AppModule, { logger: false });
    app.enableVersioning({ type: VersioningType.URI, defaultVersion: '1' });
    await app.listen(0, '127.0.0.1');
    running = { app, url: await app.getUrl(), close: () => app.close() };
    const res = await sendEvent(running.url, { event: 'echo' }, 'hi');
    expect([res.status, res.text]).toEqual([200, 'hi']);
  });
});

describe('handler context', () => {
  it('does not hand the service’s bearer token to handlers', async () => {
    const { url } = await start(AppModule);
    calls.length = 0;
    await sendEvent(url, { event: 'echo', headers: { authorization: 'Bearer secret-token' } }, 'x');
    expect(calls[0]?.context?.headers.authorization).toBeUndefined();
    expect(calls[0]?.context?.headers['ce-hub']).toBe('chat');
  });
});

describe('next to app.enableCors()', () => {
  it('still answers the abuse-protection probe, which CORS would take for a preflight', async () => {
    const app = await NestFactory.create(AppModule, { logger: false });
    app.enableCors();
    await app.listen(0, '127.0.0.1');
    running = { app, url: await app.getUrl(), close: () => app.close() };
    const probe = await fetch(`${running.url}/eventhandler`, {
      method: 'OPTIONS',
      headers: { 'WebHook-Request-Origin': 'localhost', 'ce-awpsversion': '1.0' },
    });
    expect(probe.status).toBe(200);
    expect(probe.headers.get('webhook-allowed-origin')).toBe('localhost');
    const preflight = await fetch(`${running.url}/other`, {
      method: 'OPTIONS',
      headers: { Origin: 'https://app.example.com', 'Access-Control-Request-Method': 'POST' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('*');
  });
});

/** App set-ups the module must live with: global guards, late hub classes, odd paths. */
import {
  Body,
  Controller,
  HttpException,
  Injectable,
  Module,
  Post,
  SetMetadata,
  UnauthorizedException,
  type CanActivate,
  UseGuards,
  type ExecutionContext,
} from '@nestjs/common';
import { MaxLength } from 'class-validator';
import { APP_GUARD, Reflector } from '@nestjs/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EventData,
  InjectHub,
  OnConnect,
  OnUserEvent,
  WebPubSubHub,
  WebPubSubModule,
  WebPubSubServiceClient,
  isWebPubSubContext,
  type WebPubSubContext,
} from 'nestjs-web-pubsub';
import {
  ADAPTERS,
  CONNECTION_STRING,
  connectBody,
  sendEvent,
  startApp,
  type RunningApp,
} from './upstream-helpers.js';

const IS_PUBLIC = 'isPublic';
const Public = () => SetMetadata(IS_PUBLIC, true);

/** The usual "everything needs a login" global guard of an app. */
@Injectable()
class LoginGuard implements CanActivate {
  constructor(private readonly reflector: Reflector) {}
  canActivate(context: ExecutionContext): boolean {
    if (isWebPubSubContext(context)) return true;
    if (this.reflector.getAllAndOverride(IS_PUBLIC, [context.getHandler(), context.getClass()])) {
      return true;
    }
    throw new UnauthorizedException('login required');
  }
}

// The module that calls forRoot() is defined before the hub class it serves: the hub's client
// must still be provided.
@Module({
  imports: [
    WebPubSubModule.forRoot({
      connectionString: CONNECTION_STRING,
      isGlobal: true,
      controllerDecorators: [Public()],
    }),
  ],
})
class InfraModule {}

@WebPubSubHub('late')
class LateHub {
  constructor(@InjectHub('late-hub-client') readonly client: WebPubSubServiceClient) {}

  @OnConnect()
  connect() {
    return { userId: this.client.hubName };
  }

  @OnUserEvent('echo')
  echo(@EventData() data: unknown) {
    return data;
  }
}

@Controller('users')
@Public()
class UsersController {
  @Post('eventhandler')
  create(@Body() body: unknown) {
    return { parsed: body };
  }
}

@Module({
  imports: [InfraModule],
  controllers: [UsersController],
  providers: [LateHub, { provide: APP_GUARD, useClass: LoginGuard }],
})
class AppWithLoginModule {}

@Module({
  imports: [WebPubSubModule.forRoot({ connectionString: CONNECTION_STRING, path: '/' })],
  providers: [LateHub],
})
class RootPathModule {}

class ShortDto {
  @MaxLength(3)
  text!: string;
}

@WebPubSubHub('polite')
class PoliteHub {
  @OnUserEvent('say')
  say(@EventData() message: ShortDto) {
    return { said: message.text };
  }

  @OnUserEvent('deny')
  @UseGuards(
    class Deny implements CanActivate {
      canActivate() {
        return false;
      }
    },
  )
  deny() {}

  @OnUserEvent('crash')
  crash() {
    throw new Error('bug');
  }
}

@Module({
  imports: [
    WebPubSubModule.forRoot({
      connectionString: CONNECTION_STRING,
      // Client errors become replies, so the client stays connected.
      onUserEventError: (error: HttpException, context: WebPubSubContext) => ({
        error: (error.getResponse() as { message: unknown }).message,
        event: context.eventName,
      }),
    }),
  ],
  providers: [PoliteHub],
})
class PoliteModule {}

describe.each(ADAPTERS)('set-ups over %s', (adapter) => {
  describe('onUserEventError', () => {
    let running: RunningApp;
    beforeAll(async () => {
      running = await startApp(PoliteModule, { adapter });
    });
    afterAll(() => running.close());

    const say = (event: string, body: object) =>
      sendEvent(running.url, { hub: 'polite', event, contentType: 'application/json' }, body);

    it('answers a failed validation and a guard’s refusal with a 200 reply', async () => {
      const invalid = await say('say', { text: 'far too long' });
      expect([invalid.status, invalid.json()]).toEqual([
        200,
        { error: ['text must be shorter than or equal to 3 characters'], event: 'say' },
      ]);
      const denied = await say('deny', {});
      expect([denied.status, denied.json()]).toEqual([
        200,
        { error: 'Forbidden resource', event: 'deny' },
      ]);
      expect((await say('say', { text: 'ok' })).json()).toEqual({ said: 'ok' });
    });

    it('leaves server errors as they are', async () => {
      expect((await say('crash', {})).status).toBe(500);
    });
  });

  describe('a global login guard, a hub defined after forRoot(), a look-alike route', () => {
    let running: RunningApp;
    beforeAll(async () => {
      running = await startApp(AppWithLoginModule, { adapter });
    });
    afterAll(() => running.close());

    it('answers the abuse-protection probe before any guard', async () => {
      const res = await fetch(`${running.url}/eventhandler`, {
        method: 'OPTIONS',
        headers: { 'WebHook-Request-Origin': 'localhost', 'content-type': 'text/xml' },
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('webhook-allowed-origin')).toBe('localhost');
    });

    it('lets events through a controller marked with controllerDecorators', async () => {
      const res = await sendEvent(running.url, { hub: 'late' }, connectBody());
      expect(res.json()).toEqual({ userId: 'late-hub-client' });
    });

    it('leaves another route whose path contains the upstream segment to Nest', async () => {
      const res = await fetch(`${running.url}/users/eventhandler`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'ann' }),
      });
      expect(await res.json()).toEqual({ parsed: { name: 'ann' } });
    });
  });

  describe("path '/'", () => {
    let running: RunningApp;
    beforeAll(async () => {
      running = await startApp(RootPathModule, { adapter });
    });
    afterAll(() => running.close());

    it('handles the root and every sub-path, bodies intact', async () => {
      for (const path of ['/', '/late/echo', '/api/webpubsub/late']) {
        const res = await sendEvent(
          running.url,
          { hub: 'late', event: 'echo', contentType: 'application/json' },
          '"hello"',
          path,
        );
        expect([path, res.status, res.text]).toEqual([path, 200, 'hello']);
      }
      const bytes = await sendEvent(
        running.url,
        { hub: 'late', event: 'echo', contentType: 'application/octet-stream' },
        new Uint8Array([1, 2, 3]),
        '/late/echo',
      );
      expect([...bytes.body]).toEqual([1, 2, 3]);
    });
  });
});

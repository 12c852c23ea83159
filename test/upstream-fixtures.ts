/** Hub classes and modules the upstream e2e specs run against, written as users would write them. */
import {
  ForbiddenException,
  Injectable,
  Module,
  ParseIntPipe,
  Scope,
  UnauthorizedException,
  UseGuards,
  UseInterceptors,
  type CallHandler,
  type CanActivate,
  type ExecutionContext,
  type NestInterceptor,
} from '@nestjs/common';
import { APP_GUARD, REQUEST } from '@nestjs/core';
import { IsInt, IsOptional, IsString, MaxLength, Min } from 'class-validator';
import { map } from 'rxjs';
import {
  EventContext,
  EventData,
  InjectHub,
  OnConnect,
  OnConnected,
  OnDisconnected,
  OnGroupJoined,
  OnGroupLeft,
  OnUserEvent,
  WebPubSubContext,
  WebPubSubHub,
  WebPubSubModule,
  WebPubSubReply,
  WebPubSubServiceClient,
  getWebPubSubContext,
  isWebPubSubContext,
  type ConnectRequest,
  type DisconnectedRequest,
  type GroupEventRequest,
} from 'nestjs-web-pubsub';
import { CONNECTION_STRING, SECONDARY_KEY, KEY } from './upstream-helpers.js';

/** Every handler call, in order, for the specs to assert on. */
export const calls: Array<{ handler: string; data?: unknown; context?: WebPubSubContext }> = [];

export class SayDto {
  @IsString()
  @MaxLength(10)
  text!: string;

  @IsOptional()
  @IsInt()
  @Min(0)
  priority?: number;
}

class DenyGuard implements CanActivate {
  canActivate(): boolean {
    return false;
  }
}

class WrapInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler) {
    return next.handle().pipe(map((value) => ({ wrapped: value })));
  }
}

/** A global guard as apps write them: it leaves HTTP alone and bans one user from hub events. */
@Injectable()
export class BanGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    if (!isWebPubSubContext(context)) return true;
    return getWebPubSubContext(context).userId !== 'banned';
  }
}

@WebPubSubHub('chat')
export class ChatHub {
  constructor(@InjectHub() readonly client: WebPubSubServiceClient) {}

  @OnConnect()
  connect(@EventData() request: ConnectRequest, @EventContext() context: WebPubSubContext) {
    calls.push({ handler: 'connect', data: request, context });
    const user = request.query.user?.[0];
    switch (user) {
      case 'reject':
        throw new UnauthorizedException('name is taken');
      case 'crash':
        throw new Error('database exploded at /srv/secret/path');
      case 'none':
        return undefined;
      case 'empty-subprotocol':
        return { userId: user, subprotocol: '' };
      case 'bad-subprotocol':
        return { userId: user, subprotocol: 'not-offered' };
      case 'protocol':
        return { subprotocol: 'json.webpubsub.azure.v1' };
    }
    context.setState('name', user);
    return { userId: user, groups: ['lobby'], roles: ['webpubsub.sendToGroup.lobby'] };
  }

  @OnConnected()
  connected(@EventContext() context: WebPubSubContext) {
    calls.push({ handler: 'connected', context });
    context.setState('ignored', true);
  }

  @OnDisconnected()
  async disconnected(@EventData() request: DisconnectedRequest) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    calls.push({ handler: 'disconnected', data: request });
    if (request.reason === 'crash') throw new Error('cleanup failed');
  }

  @OnGroupJoined()
  joined(@EventData() request: GroupEventRequest) {
    calls.push({ handler: 'joined', data: request });
  }

  @OnGroupLeft()
  left(@EventData() request: GroupEventRequest) {
    calls.push({ handler: 'left', data: request });
  }

  @OnUserEvent('say')
  say(@EventData() message: SayDto, @EventContext() context: WebPubSubContext) {
    calls.push({ handler: 'say', data: message, context });
    return { from: context.userId, text: message.text, isDto: message instanceof SayDto };
  }

  @OnUserEvent('echo')
  echo(@EventData() data: unknown, @EventContext() context: WebPubSubContext) {
    calls.push({ handler: 'echo', data, context });
    return data;
  }

  @OnUserEvent('count')
  count(@EventContext() context: WebPubSubContext) {
    const n = ((context.states.n as number | undefined) ?? 0) + 1;
    context.setState('n', n);
    return n;
  }

  @OnUserEvent('clear')
  clear(@EventContext() context: WebPubSubContext) {
    context.clearStates();
  }

  @OnUserEvent('states')
  states(@EventContext() context: WebPubSubContext) {
    return context.states;
  }

  @OnUserEvent('jsonString')
  jsonString() {
    return WebPubSubReply.json('hello');
  }

  @OnUserEvent('bytes')
  bytes() {
    return new Uint8Array([0, 1, 254, 255]);
  }

  @OnUserEvent('nothing')
  nothing() {
    calls.push({ handler: 'nothing' });
  }

  @OnUserEvent('reject')
  async reject() {
    await Promise.resolve();
    throw new Error('async failure');
  }

  @OnUserEvent('throwString')
  throwString() {
    throw 'a string, not an Error';
  }

  @OnUserEvent('forbidden')
  forbidden() {
    throw new ForbiddenException('not in this room');
  }

  @OnUserEvent('guarded')
  @UseGuards(DenyGuard)
  guarded() {
    calls.push({ handler: 'guarded' });
    return 'should not run';
  }

  @OnUserEvent('intercepted')
  @UseInterceptors(WrapInterceptor)
  intercepted() {
    return 'inner';
  }

  @OnUserEvent('plusOne')
  plusOne(@EventData(ParseIntPipe) n: number) {
    return n + 1;
  }

  @OnUserEvent('positional')
  positional(data: unknown, context: WebPubSubContext) {
    return { data, hub: context.hub };
  }

  @OnUserEvent()
  anyEvent(@EventContext() context: WebPubSubContext) {
    return `any:${context.eventName}`;
  }
}

@WebPubSubHub('notifications')
export class NotificationsHub {
  constructor(@InjectHub('chat') readonly chat: WebPubSubServiceClient) {}

  @OnConnect()
  connect(@EventContext() context: WebPubSubContext) {
    return { userId: context.userId ?? 'anonymous' };
  }
}

@Module({
  imports: [WebPubSubModule.forRoot({ connectionString: CONNECTION_STRING })],
  providers: [ChatHub, NotificationsHub, { provide: APP_GUARD, useClass: BanGuard }],
})
export class AppModule {}

@Module({
  imports: [
    WebPubSubModule.forRootAsync({
      useFactory: async () => ({
        connectionString: CONNECTION_STRING,
        accessKeys: [KEY, SECONDARY_KEY],
        allowedEndpoints: ['*'],
      }),
      path: '/api/webpubsub/',
    }),
  ],
  providers: [ChatHub, NotificationsHub],
})
export class AsyncAppModule {}

// ---- misconfigurations

@WebPubSubHub('chat')
class OtherChatHub {
  @OnUserEvent('say')
  alsoSay() {}
}

@Module({
  imports: [WebPubSubModule.forRoot({ connectionString: CONNECTION_STRING })],
  providers: [ChatHub, OtherChatHub],
})
export class DuplicateHandlersModule {}

@WebPubSubHub('scoped')
@Injectable({ scope: Scope.REQUEST })
class ScopedHub {
  @OnConnect()
  connect() {}
}

@WebPubSubHub('implicit')
class ImplicitlyScopedHub {
  constructor(readonly request: object) {}
  @OnConnect()
  connect() {}
}

@Module({
  imports: [WebPubSubModule.forRoot({ connectionString: CONNECTION_STRING })],
  providers: [
    ScopedHub,
    {
      provide: ImplicitlyScopedHub,
      useFactory: (req: object) => new ImplicitlyScopedHub(req),
      inject: [REQUEST],
    },
  ],
})
export class RequestScopedModule {}

@Module({ imports: [WebPubSubModule.forRoot({})], providers: [] })
export class MissingCredentialsModule {}

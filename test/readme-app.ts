/** The README's quick start, word for word (one file here): the readme spec runs it. */
import { Logger, Module, UnauthorizedException } from '@nestjs/common';
import { IsString, MaxLength } from 'class-validator';
import {
  EventContext,
  EventData,
  InjectHub,
  OnConnect,
  OnConnected,
  OnDisconnected,
  OnUserEvent,
  WebPubSubContext,
  WebPubSubHub,
  WebPubSubModule,
  WebPubSubServiceClient,
  type ConnectRequest,
  type DisconnectedRequest,
} from 'nestjs-web-pubsub';

export class SayDto {
  @IsString() @MaxLength(500) text!: string;
}

@WebPubSubHub('chat')
export class ChatHub {
  private readonly logger = new Logger(ChatHub.name);

  constructor(@InjectHub('chat') private readonly hub: WebPubSubServiceClient) {}

  @OnConnect()
  connect(@EventData() req: ConnectRequest, @EventContext() ctx: WebPubSubContext) {
    const name = req.query.user?.[0]; // every query value is an array
    if (!name) throw new UnauthorizedException('a user name is required');
    ctx.setState('joinedAt', Date.now()); // travels with the connection
    return { userId: name, groups: ['room'] }; // accept, with overrides
  }

  @OnConnected()
  async connected(@EventContext() ctx: WebPubSubContext) {
    await this.hub.group('room').sendToAll({ joined: ctx.userId });
  }

  @OnUserEvent('say')
  async say(@EventData() msg: SayDto, @EventContext() ctx: WebPubSubContext) {
    await this.hub.group('room').sendToAll({ from: ctx.userId, text: msg.text });
    return { ok: true }; // sent back to the caller
  }

  @OnDisconnected()
  disconnected(@EventData() req: DisconnectedRequest, @EventContext() ctx: WebPubSubContext) {
    this.logger.log(`${ctx.userId} left: ${req.reason ?? 'no reason'}`);
  }
}

@Module({
  imports: [
    WebPubSubModule.forRoot({
      connectionString: process.env.WEBPUBSUB_CONNECTION_STRING!,
      path: '/eventhandler',
    }),
  ],
  providers: [ChatHub],
})
export class AppModule {}

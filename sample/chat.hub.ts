import { Logger, UnauthorizedException } from '@nestjs/common';
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
  WebPubSubServiceClient,
  type DisconnectedRequest,
} from 'nestjs-web-pubsub';
import { LOBBY, RoomDto, SayDto, TypingDto } from './chat.dto.js';
import { ChatUsers } from './chat.users.js';

/** The rooms a connection is in live in its connection state, not in this process. */
const roomsOf = (context: WebPubSubContext): string[] =>
  (context.states.rooms as string[] | undefined) ?? [];

@WebPubSubHub('chat')
export class ChatHub {
  private readonly logger = new Logger(ChatHub.name);

  constructor(
    @InjectHub() private readonly hub: WebPubSubServiceClient,
    private readonly users: ChatUsers,
  ) {}

  /** The name comes from the token /negotiate issued; it is checked again here, where it counts. */
  @OnConnect()
  async connect(@EventContext() context: WebPubSubContext) {
    const refusal = await this.users.refusal(context.userId);
    if (refusal) throw new UnauthorizedException(refusal);
    context.setState('rooms', [LOBBY]);
    return { userId: context.userId!.trim(), groups: [LOBBY] };
  }

  @OnConnected()
  async connected(@EventContext() context: WebPubSubContext) {
    this.logger.log(`${context.userId} signed in`);
    await this.hub.sendToConnection(context.connectionId, {
      type: 'welcome',
      user: context.userId,
      users: await this.users.online(),
      rooms: [LOBBY],
    });
    await this.hub.sendToAll(
      { type: 'presence', user: context.userId, online: true },
      { excludedConnections: [context.connectionId] },
    );
  }

  @OnDisconnected()
  async disconnected(
    @EventData() request: DisconnectedRequest,
    @EventContext() context: WebPubSubContext,
  ) {
    this.logger.log(`${context.userId} left (${request.reason || 'closed'})`);
    await this.hub.sendToAll({ type: 'presence', user: context.userId, online: false });
  }

  @OnUserEvent('join')
  async join(@EventData() { room }: RoomDto, @EventContext() context: WebPubSubContext) {
    const rooms = roomsOf(context);
    if (!rooms.includes(room)) {
      await this.hub.group(room).addConnection(context.connectionId);
      context.setState('rooms', [...rooms, room]);
      await this.hub.group(room).sendToAll({ type: 'joined', room, user: context.userId });
    }
    return { rooms: roomsOf(context) };
  }

  @OnUserEvent('leave')
  async leave(@EventData() { room }: RoomDto, @EventContext() context: WebPubSubContext) {
    const rooms = roomsOf(context);
    if (room !== LOBBY && rooms.includes(room)) {
      await this.hub.group(room).removeConnection(context.connectionId);
      context.setState(
        'rooms',
        rooms.filter((r) => r !== room),
      );
      await this.hub.group(room).sendToAll({ type: 'left', room, user: context.userId });
    }
    return { rooms: roomsOf(context) };
  }

  /** App-level errors are answered as values: a non-2xx would close the client's connection. */
  @OnUserEvent('say')
  async say(@EventData() { room, text }: SayDto, @EventContext() context: WebPubSubContext) {
    if (!roomsOf(context).includes(room)) return { error: `Join ${room} first.` };
    const message = { type: 'message', room, from: context.userId, text, at: Date.now() };
    await this.hub.group(room).sendToAll(message);
    return { sent: true };
  }

  @OnUserEvent('typing')
  async typing(@EventData() { room }: TypingDto, @EventContext() context: WebPubSubContext) {
    if (!roomsOf(context).includes(room)) return;
    await this.hub
      .group(room)
      .sendToAll(
        { type: 'typing', room, user: context.userId },
        { excludedConnections: [context.connectionId] },
      );
  }
}

/** (c) this module: a hub with an echo handler, a validated-DTO handler and a connect handler. */
import { Module } from '@nestjs/common';
import {
  EventData,
  OnConnect,
  OnUserEvent,
  WebPubSubHub,
  WebPubSubModule,
  type ConnectRequest,
} from 'nestjs-web-pubsub';
import { ChatMessageDto } from './chat-message.dto.js';
import { startNest } from './server-nest.js';
import type { RunningServer } from './servers.js';
import { CONNECTION_STRING, HUB, UPSTREAM_PATH, connectReply, dtoReply } from './workloads.js';

@WebPubSubHub(HUB)
class BenchHub {
  @OnConnect()
  connect(@EventData() request: ConnectRequest) {
    return connectReply(request.query);
  }

  @OnUserEvent('echo')
  echo(@EventData() text: string) {
    return text;
  }

  @OnUserEvent('validated')
  validated(@EventData() message: ChatMessageDto) {
    return dtoReply(message);
  }
}

@Module({
  imports: [WebPubSubModule.forRoot({ connectionString: CONNECTION_STRING, path: UPSTREAM_PATH })],
  providers: [BenchHub],
})
class ModuleBenchModule {}

export const startModule = (adapter: 'express' | 'fastify'): Promise<RunningServer> =>
  startNest(ModuleBenchModule, adapter);

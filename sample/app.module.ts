import { Module } from '@nestjs/common';
import { WebPubSubModule } from 'nestjs-web-pubsub';
import { ChatHub } from './chat.hub.js';
import { ChatUsers } from './chat.users.js';
import { NegotiateController } from './negotiate.controller.js';

@Module({
  imports: [
    WebPubSubModule.forRootAsync({
      // Read when the app starts, so main.ts can point it at the embedded emulator first.
      useFactory: () => ({ connectionString: process.env.WEBPUBSUB_CONNECTION_STRING }),
      path: '/eventhandler',
    }),
  ],
  controllers: [NegotiateController],
  providers: [ChatHub, ChatUsers],
})
export class AppModule {}

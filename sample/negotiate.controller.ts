import { BadRequestException, Controller, Get, Query } from '@nestjs/common';
import { InjectHub, WebPubSubServiceClient } from 'nestjs-web-pubsub';
import { ChatUsers } from './chat.users.js';

/** Hands the page a client URL: the service, not this app, holds the WebSocket. */
@Controller('negotiate')
export class NegotiateController {
  constructor(
    @InjectHub('chat') private readonly hub: WebPubSubServiceClient,
    private readonly users: ChatUsers,
  ) {}

  @Get()
  async negotiate(@Query('name') name?: string) {
    // Checked here so the page can show why; the connect handler checks again.
    const refusal = await this.users.refusal(name);
    if (refusal) throw new BadRequestException(refusal);
    const token = await this.hub.getClientAccessToken({
      userId: name!.trim(),
      roles: [],
      expirationTimeInMinutes: 60,
    });
    return { url: token.url };
  }
}

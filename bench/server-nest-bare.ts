/** (b) a bare Nest controller doing the module's work by hand: the floor Nest sets per adapter. */
import type { IncomingMessage } from 'node:http';
import {
  Body,
  Controller,
  Header,
  Headers,
  HttpCode,
  HttpException,
  Module,
  Post,
  Req,
  ValidationPipe,
} from '@nestjs/common';
import type { ConnectRequest } from 'nestjs-web-pubsub';
import { ChatMessageDto } from './chat-message.dto.js';
import { startNest } from './server-nest.js';
import { readBody, type RunningServer } from './servers.js';
import { TEXT_TYPE, UPSTREAM_PATH, connectReply, dtoReply, upstreamRefusal } from './workloads.js';

type AdapterRequest = IncomingMessage & { body?: unknown };

function refuseUnlessSigned(headers: IncomingMessage['headers']): void {
  const refusal = upstreamRefusal(headers);
  if (refusal) throw new HttpException('refused', refusal);
}

@Controller(UPSTREAM_PATH)
class BareUpstreamController {
  /** Express leaves a text body unread; Fastify has parsed it into a string. */
  @Post('echo')
  @HttpCode(200)
  @Header('content-type', TEXT_TYPE)
  async echo(@Req() req: AdapterRequest): Promise<string> {
    refuseUnlessSigned(req.headers);
    if (typeof req.body === 'string') return req.body;
    return (await readBody(req)).toString('utf8');
  }

  @Post('validated')
  @HttpCode(200)
  validated(
    @Headers() headers: IncomingMessage['headers'],
    @Body(new ValidationPipe({ transform: true })) message: ChatMessageDto,
  ) {
    refuseUnlessSigned(headers);
    return dtoReply(message);
  }

  @Post('connect')
  @HttpCode(200)
  connect(@Headers() headers: IncomingMessage['headers'], @Body() request: ConnectRequest) {
    refuseUnlessSigned(headers);
    return connectReply(request.query);
  }
}

@Module({ controllers: [BareUpstreamController] })
class BareNestModule {}

export const startBareNest = (adapter: 'express' | 'fastify'): Promise<RunningServer> =>
  startNest(BareNestModule, adapter);

import type { IncomingMessage } from 'node:http';
import {
  BadRequestException,
  Inject,
  Injectable,
  UnauthorizedException,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { WEB_PUBSUB_CONFIG } from './web-pubsub.constants.js';
import { Messages } from './web-pubsub.errors.js';
import type { WebPubSubConfig } from './web-pubsub.options.js';
import { Headers } from './web-pubsub.protocol.js';

/**
 * Authenticates every event POST before anything else reads it: `ce-signature` must match an
 * HMAC of `ce-connectionId` under one of the configured access keys (401 otherwise). The
 * abuse-protection probe (OPTIONS) carries no signature and is let through.
 */
@Injectable()
export class WebPubSubGuard implements CanActivate {
  constructor(@Inject(WEB_PUBSUB_CONFIG) private readonly config: WebPubSubConfig) {}

  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest<IncomingMessage>();
    if (request.method === 'OPTIONS' || !this.config.signatureRequired) return true;
    const connectionId = request.headers[Headers.connectionId];
    if (typeof connectionId !== 'string' || !connectionId) {
      throw new BadRequestException(Messages.missingHeaders([Headers.connectionId]));
    }
    const signature = request.headers[Headers.signature];
    if (
      !this.config.verifySignature(
        connectionId,
        typeof signature === 'string' ? signature : undefined,
      )
    ) {
      throw new UnauthorizedException(Messages.badSignature);
    }
    return true;
  }
}

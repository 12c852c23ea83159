import type { IncomingMessage } from 'node:http';
import {
  BadRequestException,
  Inject,
  Injectable,
  Logger,
  ServiceUnavailableException,
  UnauthorizedException,
  type CanActivate,
  type ExecutionContext,
} from '@nestjs/common';
import { WEB_PUBSUB_CONFIG } from './web-pubsub.constants.js';
import { EntraAuthError } from './web-pubsub.entra.js';
import { Messages } from './web-pubsub.errors.js';
import type { WebPubSubConfig } from './web-pubsub.options.js';
import { CeHeaders } from './web-pubsub.protocol.js';

/**
 * Authenticates every event POST before anything else reads it (401 otherwise):
 * - `ce-signature` must match an HMAC of `ce-connectionId` under one of the access keys;
 * - with `auth.entra`, the `Authorization` bearer token must be a valid Entra ID token.
 * The abuse-protection probe (OPTIONS) carries neither and is let through.
 */
@Injectable()
export class WebPubSubGuard implements CanActivate {
  private readonly logger = new Logger('WebPubSubModule');

  constructor(@Inject(WEB_PUBSUB_CONFIG) private readonly config: WebPubSubConfig) {}

  canActivate(context: ExecutionContext): boolean | Promise<boolean> {
    const request = context.switchToHttp().getRequest<IncomingMessage>();
    if (request.method === 'OPTIONS') return true;
    if (this.config.signatureRequired) this.checkSignature(request);
    return this.config.verifyBearer ? this.checkBearer(request, this.config.verifyBearer) : true;
  }

  protected checkSignature(request: IncomingMessage): void {
    const connectionId = request.headers[CeHeaders.connectionId];
    if (typeof connectionId !== 'string' || !connectionId) {
      throw new BadRequestException(Messages.missingHeaders([CeHeaders.connectionId]));
    }
    const signature = request.headers[CeHeaders.signature];
    if (
      !this.config.verifySignature(
        connectionId,
        typeof signature === 'string' ? signature : undefined,
      )
    ) {
      throw new UnauthorizedException(Messages.badSignature);
    }
  }

  protected async checkBearer(
    request: IncomingMessage,
    verify: NonNullable<WebPubSubConfig['verifyBearer']>,
  ): Promise<boolean> {
    try {
      await verify(request.headers.authorization);
      return true;
    } catch (err) {
      if (err instanceof EntraAuthError) {
        this.logger.warn(`Upstream request refused: ${err.message}`);
        throw new UnauthorizedException(err.message);
      }
      // The keys are out of reach: our problem, not the caller's. Details stay in the log.
      this.logger.error(`Entra ID signing keys unavailable: ${(err as Error).message}`);
      throw new ServiceUnavailableException(Messages.entraKeysUnavailable);
    }
  }
}

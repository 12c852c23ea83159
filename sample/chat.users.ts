import { Injectable } from '@nestjs/common';
import { InjectHub, WebPubSubServiceClient } from 'nestjs-web-pubsub';
import { LOBBY } from './chat.dto.js';

export const NAME_PATTERN = /^[\p{L}\p{N}_.-]{1,24}$/u;

/**
 * Who is online, asked of the service itself (every connection joins the lobby): the upstream
 * keeps no memory of its own, so any number of instances can run behind a load balancer.
 */
@Injectable()
export class ChatUsers {
  constructor(@InjectHub('chat') private readonly hub: WebPubSubServiceClient) {}

  /**
   * Why a name cannot sign in, or `undefined` when it can. A check, not a reservation: two tabs
   * signing in with one name at the same instant may both pass (enough for a sample; an app that
   * needs unique names keeps them in a store with an atomic insert).
   */
  async refusal(name: string | undefined): Promise<string | undefined> {
    const trimmed = name?.trim() ?? '';
    if (!trimmed) return 'Please enter a name.';
    if (!NAME_PATTERN.test(trimmed)) {
      return 'Names are 1-24 letters, digits, dots, dashes or underscores.';
    }
    if (await this.hub.userExists(trimmed)) return `The name "${trimmed}" is taken.`;
    return undefined;
  }

  async online(): Promise<string[]> {
    const users = new Set<string>();
    for await (const member of await this.hub.group(LOBBY).listConnections()) {
      if (member.userId) users.add(member.userId);
    }
    return [...users].sort();
  }
}

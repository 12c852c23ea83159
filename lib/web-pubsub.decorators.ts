import { Inject, type PipeTransform, type Type } from '@nestjs/common';
import {
  ARGS_METADATA,
  EVENT_CONTEXT_PARAM,
  EVENT_DATA_PARAM,
  HANDLER_METADATA,
  HUB_METADATA,
} from './web-pubsub.constants.js';
import type { WebPubSubEventKind } from './web-pubsub.protocol.js';

/** What one method decorator says: which event of the class' hub the method handles. */
export interface HandlerMetadata {
  kind: WebPubSubEventKind;
  /** User events: the event name, or `undefined` for the catch-all handler. */
  userEvent?: string;
}

/** The injection token of the `WebPubSubServiceClient` for a hub (names are case-insensitive). */
export function getHubToken(hub: string): string {
  return `WebPubSubServiceClient:${hub.toLowerCase()}`;
}

/**
 * Hubs named in `@InjectHub()`/`@WebPubSubHub()`, collected as classes are defined so that the
 * module can provide a client for each without a separate list. The module reads it when Nest
 * scans the app, once every file is loaded; hubs of lazily loaded modules go in `hubs`.
 */
const declaredHubs = new Map<string, string>();

function declareHub(hub: string): void {
  if (!declaredHubs.has(hub.toLowerCase())) declaredHubs.set(hub.toLowerCase(), hub);
}

/** @internal Hub names seen so far, in their first spelling. */
export function getDeclaredHubs(): string[] {
  return [...declaredHubs.values()];
}

const PENDING_HUB_INJECTIONS = 'web-pubsub:pending-hub-injections';

/**
 * Marks a provider as the handlers of one hub. A hub may be served by several classes, but each
 * event by one method only.
 */
export function WebPubSubHub(hub: string): ClassDecorator {
  if (typeof hub !== 'string' || !hub.trim()) {
    throw new TypeError('@WebPubSubHub() needs the hub name');
  }
  return (target) => {
    declareHub(hub);
    Reflect.defineMetadata(HUB_METADATA, hub, target);
    // `@InjectHub()` without a name runs before this decorator; bind it to this hub now.
    const pending: number[] = Reflect.getMetadata(PENDING_HUB_INJECTIONS, target) ?? [];
    for (const index of pending) Inject(getHubToken(hub))(target, undefined, index);
    // No Injectable() here: it would reset a scope set by the user's own @Injectable({ scope }).
  };
}

/**
 * Injects the official `WebPubSubServiceClient` of a hub, built from the module's options.
 * Without a name, inside a `@WebPubSubHub()` class constructor: the client of that class' hub.
 */
export function InjectHub(hub?: string): ParameterDecorator & PropertyDecorator {
  return (target: object, key: string | symbol | undefined, index?: number) => {
    if (hub) {
      declareHub(hub);
      // Nest's Inject() serves both parameters and properties; its typing names only one.
      const inject = Inject(getHubToken(hub)) as (
        t: object,
        k?: string | symbol,
        i?: number,
      ) => void;
      return inject(target, key, index);
    }
    if (typeof index !== 'number' || key !== undefined) {
      throw new TypeError(
        '@InjectHub() without a hub name works on constructor parameters of a @WebPubSubHub() class only',
      );
    }
    const pending: number[] = Reflect.getMetadata(PENDING_HUB_INJECTIONS, target) ?? [];
    Reflect.defineMetadata(PENDING_HUB_INJECTIONS, [...pending, index], target);
  };
}

function handlerDecorator(entry: HandlerMetadata): MethodDecorator {
  return (_target, _key, descriptor) => {
    const method = descriptor.value as object;
    const existing: HandlerMetadata[] = Reflect.getMetadata(HANDLER_METADATA, method) ?? [];
    Reflect.defineMetadata(HANDLER_METADATA, [...existing, entry], method);
    return descriptor;
  };
}

/**
 * The blocking `connect` event, before the WebSocket handshake completes. Return
 * `{ userId, groups, roles, subprotocol }` to accept with overrides, nothing to accept as is, or
 * throw an `HttpException` (e.g. `UnauthorizedException`) to reject the client with its status.
 */
export const OnConnect = (): MethodDecorator => handlerDecorator({ kind: 'connect' });

/** The connection is established (non-blocking; the return value is ignored). */
export const OnConnected = (): MethodDecorator => handlerDecorator({ kind: 'connected' });

/** The connection has ended (non-blocking). `@EventData()` is `{ reason }`. */
export const OnDisconnected = (): MethodDecorator => handlerDecorator({ kind: 'disconnected' });

/**
 * A user event (blocking): `event` frames of PubSub-subprotocol clients, every frame of simple
 * clients (event `message`). Without a name: every user event that has no handler of its own.
 * The return value is sent back to the client.
 */
export const OnUserEvent = (event?: string): MethodDecorator => {
  if (event !== undefined && (typeof event !== 'string' || !event)) {
    throw new TypeError('@OnUserEvent(): the event name must be a non-empty string');
  }
  return handlerDecorator({ kind: 'user', userEvent: event });
};

/** A connection joined a group (group presence events, opt-in on the service). */
export const OnGroupJoined = (): MethodDecorator => handlerDecorator({ kind: 'groupJoined' });

/** A connection left a group. */
export const OnGroupLeft = (): MethodDecorator => handlerDecorator({ kind: 'groupLeft' });

function paramDecorator(type: number, pipes: (Type<PipeTransform> | PipeTransform)[]) {
  return (target: object, key: string | symbol | undefined, index: number) => {
    if (key === undefined)
      throw new TypeError('Web PubSub parameter decorators go on handler methods');
    const args = Reflect.getMetadata(ARGS_METADATA, target.constructor, key) ?? {};
    Reflect.defineMetadata(
      ARGS_METADATA,
      { ...args, [`${type}:${index}`]: { index, data: undefined, pipes } },
      target.constructor,
      key,
    );
  };
}

/**
 * The event's payload: the `ConnectRequest` for `connect`, the user event's data (a string for
 * text, the parsed value for JSON, a Buffer for binary), `{ reason }` for `disconnected`,
 * `{ group }` for group events. When the parameter's type is a class, the payload is transformed
 * and validated with class-validator first; extra pipes run after that.
 */
export function EventData(...pipes: (Type<PipeTransform> | PipeTransform)[]): ParameterDecorator {
  return paramDecorator(EVENT_DATA_PARAM, pipes);
}

/** The `WebPubSubContext` of the event: hub, connection, user, state. */
export function EventContext(): ParameterDecorator {
  return paramDecorator(EVENT_CONTEXT_PARAM, []);
}

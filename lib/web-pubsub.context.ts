import type { ExecutionContext } from '@nestjs/common';
import { WEB_PUBSUB_CONTEXT_TYPE } from './web-pubsub.constants.js';

import {
  BLOCKING_EVENTS,
  type ConnectionStates,
  type MqttUserProperty,
  type UserEventDataType,
  type WebPubSubEventKind,
} from './web-pubsub.protocol.js';

/** What the event's CloudEvents headers say, as the context exposes it. */
export interface WebPubSubContextInit {
  hub: string;
  connectionId: string;
  eventName: string;
  kind: WebPubSubEventKind;
  id: string;
  time?: string;
  userId?: string;
  subprotocol?: string;
  origin?: string;
  signature?: string;
  physicalConnectionId?: string;
  sessionId?: string;
  /** Told apart by the caller: by the subprotocol and physical connection id, or a connect body's `mqtt`. */
  isMqtt: boolean;
  mqttUserProperties?: MqttUserProperty[];
  dataType?: UserEventDataType;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  states: ConnectionStates;
  /** Called when state is changed on an event that cannot carry it back to the service. */
  onIgnoredStateChange: (context: WebPubSubContext) => void;
}

/**
 * One event of one client connection, as `@EventContext()` hands it to a handler. Changes made
 * with `setState`/`clearStates` during a blocking event (`connect`, user events) travel back to
 * the service in `ce-connectionState` and come back on every later event of the connection.
 */
export class WebPubSubContext {
  /** Hub name as the service sent it in `ce-hub`. */
  readonly hub: string;
  readonly connectionId: string;
  /** `connect`, `connected`, `disconnected`, `joined`, `left` or the user event's name. */
  readonly eventName: string;
  /** Which handler kind the event is for. */
  readonly eventKind: WebPubSubEventKind;
  /** `ce-id`: unique within this connection only. */
  readonly eventId: string;
  readonly time?: string;
  /** Absent for anonymous connections. */
  readonly userId?: string;
  /** The negotiated subprotocol (absent on `connect`, whose body lists the offered ones). */
  readonly subprotocol?: string;
  /** `WebHook-Request-Origin`: the service host(s) that sent the event. */
  readonly origin?: string;
  readonly signature?: string;
  /** `mqtt` for MQTT clients, `default` for WebSocket clients. */
  readonly clientProtocol: 'default' | 'mqtt';
  /** MQTT connections only; `userProperties` on user events (MQTT 5 PUBLISH user properties). */
  readonly mqtt?: {
    physicalConnectionId?: string;
    sessionId?: string;
    userProperties?: MqttUserProperty[];
  };
  /** User events only: how the payload was decoded. */
  readonly dataType?: UserEventDataType;
  /** The request's headers, lower-cased, for anything the context does not expose (`authorization` removed). */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;

  private currentStates: ConnectionStates;
  private changed = false;
  private readonly onIgnoredStateChange: (context: WebPubSubContext) => void;

  constructor(init: WebPubSubContextInit) {
    this.hub = init.hub;
    this.connectionId = init.connectionId;
    this.eventName = init.eventName;
    this.eventKind = init.kind;
    this.eventId = init.id;
    this.time = init.time;
    this.userId = init.userId;
    this.subprotocol = init.subprotocol;
    this.origin = init.origin;
    this.signature = init.signature;
    this.dataType = init.dataType;
    this.headers = init.headers;
    this.currentStates = init.states;
    this.onIgnoredStateChange = init.onIgnoredStateChange;
    this.clientProtocol = init.isMqtt ? 'mqtt' : 'default';
    if (init.isMqtt) {
      this.mqtt = {
        physicalConnectionId: init.physicalConnectionId,
        sessionId: init.sessionId,
        userProperties: init.mqttUserProperties,
      };
    }
  }

  /** The connection state decoded from `ce-connectionState`, with this event's changes applied. */
  get states(): Readonly<ConnectionStates> {
    return this.currentStates;
  }

  /** True when `setState`/`clearStates` was called during a blocking event. */
  get stateChanged(): boolean {
    return this.changed;
  }

  /** Sets one key of the connection state; `undefined` removes the key. */
  setState(key: string, value: unknown): this {
    if (!this.canChangeState()) return this;
    const next = { ...this.currentStates };
    if (value === undefined) delete next[key];
    else next[key] = value;
    this.currentStates = next;
    this.changed = true;
    return this;
  }

  /** Removes every key; the service then stops sending a state for this connection. */
  clearStates(): this {
    if (!this.canChangeState()) return this;
    this.currentStates = {};
    this.changed = true;
    return this;
  }

  private canChangeState(): boolean {
    if (BLOCKING_EVENTS.has(this.eventKind)) return true;
    this.onIgnoredStateChange(this);
    return false;
  }
}

/** For global guards and interceptors: true when the call is a Web PubSub event handler. */
export function isWebPubSubContext(context: ExecutionContext): boolean {
  return context.getType<string>() === WEB_PUBSUB_CONTEXT_TYPE;
}

/** The `WebPubSubContext` of a handler call, from a guard's or interceptor's `ExecutionContext`. */
export function getWebPubSubContext(context: ExecutionContext): WebPubSubContext {
  if (!isWebPubSubContext(context)) {
    throw new TypeError('getWebPubSubContext(): not a Web PubSub handler call');
  }
  return context.getArgByIndex<WebPubSubContext>(1);
}

/** For guards: the decoded payload of the handler call (argument 0). */
export function getWebPubSubEventData<T = unknown>(context: ExecutionContext): T {
  return context.getArgByIndex<T>(0);
}

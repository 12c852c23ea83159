/**
 * Hubs for the robustness specs (fuzz and load): every handler call is recorded with the
 * connection it ran for, and handlers fail only on a recognizable trigger.
 */
import { createHash } from 'node:crypto';
import { Module } from '@nestjs/common';
import { IsInt, IsString, MaxLength } from 'class-validator';
import {
  EventContext,
  EventData,
  OnConnect,
  OnConnected,
  OnDisconnected,
  OnGroupJoined,
  OnGroupLeft,
  OnUserEvent,
  WebPubSubContext,
  WebPubSubHub,
  WebPubSubModule,
  type ConnectRequest,
} from 'nestjs-web-pubsub';
import { CONNECTION_STRING, KEY, SECONDARY_KEY } from './upstream-helpers.js';

// ---------------------------------------------------------------------------------------------
// Fuzz

export const FUZZ_HUB = 'fuzz';

/** One handler call: which handler, and for which `ce-connectionId` it ran. */
export interface Invocation {
  handler: string;
  connectionId: string;
}

/** Every handler call of the fuzz hub, in order; and the calls that threw on purpose. */
export const fuzzLog = { invocations: [] as Invocation[], throws: 0 };

const record = (handler: string, context: WebPubSubContext) =>
  fuzzLog.invocations.push({ handler, connectionId: context.connectionId });

export class FuzzDto {
  @IsString()
  @MaxLength(20)
  text!: string;

  @IsInt()
  n!: number;
}

/** The error the `boom` handlers throw: its message and stack must never reach a response. */
export class BoomError extends Error {
  override name = 'BoomError';
}

@WebPubSubHub(FUZZ_HUB)
export class FuzzHub {
  @OnConnect()
  connect(@EventData() request: ConnectRequest, @EventContext() context: WebPubSubContext) {
    record('connect', context);
    context.setState('connectedAs', context.connectionId.slice(0, 32));
    return { userId: request.query.user?.[0] ?? 'anonymous' };
  }

  @OnConnected()
  connected(@EventContext() context: WebPubSubContext) {
    record('connected', context);
  }

  @OnDisconnected()
  disconnected(@EventContext() context: WebPubSubContext) {
    record('disconnected', context);
  }

  @OnGroupJoined()
  joined(@EventContext() context: WebPubSubContext) {
    record('joined', context);
  }

  @OnGroupLeft()
  left(@EventContext() context: WebPubSubContext) {
    record('left', context);
  }

  /** Answers with a summary only, so no fuzzed input is echoed into a response body. */
  @OnUserEvent('echo')
  echo(@EventData() data: unknown, @EventContext() context: WebPubSubContext) {
    record('echo', context);
    const size = Buffer.isBuffer(data)
      ? data.length
      : typeof data === 'string'
        ? data.length
        : (JSON.stringify(data)?.length ?? 0);
    return { dataType: context.dataType, size };
  }

  @OnUserEvent('count')
  count(@EventContext() context: WebPubSubContext) {
    record('count', context);
    const n = typeof context.states.n === 'number' ? context.states.n + 1 : 1;
    context.setState('n', n);
    return { n };
  }

  @OnUserEvent('dto')
  dto(@EventData() data: FuzzDto, @EventContext() context: WebPubSubContext) {
    record('dto', context);
    return { ok: data instanceof FuzzDto };
  }

  @OnUserEvent('boom')
  boom(@EventContext() context: WebPubSubContext): never {
    record('boom', context);
    fuzzLog.throws++;
    const err = new BoomError('boom in /srv/app/secret/handler.ts');
    err.stack = `BoomError: boom\n    at FuzzHub.boom (/srv/app/secret/handler.ts:1:1)`;
    throw err;
  }

  @OnUserEvent('boomAsync')
  async boomAsync(@EventContext() context: WebPubSubContext): Promise<never> {
    record('boomAsync', context);
    await Promise.resolve();
    fuzzLog.throws++;
    throw new BoomError('async boom in /srv/app/secret/handler.ts');
  }

  @OnUserEvent()
  anyEvent(@EventContext() context: WebPubSubContext) {
    record('any', context);
    return 'any';
  }
}

@Module({
  imports: [
    WebPubSubModule.forRoot({
      connectionString: CONNECTION_STRING,
      accessKeys: [KEY, SECONDARY_KEY],
    }),
  ],
  providers: [FuzzHub],
})
export class FuzzModule {}

/** The same app with a key the senders do not use: every signed request must be refused. */
@Module({
  imports: [
    WebPubSubModule.forRoot({
      connectionString: CONNECTION_STRING,
      accessKeys: ['a-key-nobody-signs-with-0123456789abcdef'],
    }),
  ],
  providers: [FuzzHub],
})
export class FuzzWrongKeyModule {}

/** The same app with the signature check turned off: handlers run for anyone. */
@Module({
  imports: [WebPubSubModule.forRoot({ connectionString: CONNECTION_STRING, accessKeys: [] })],
  providers: [FuzzHub],
})
export class FuzzNoSignatureCheckModule {}

// ---------------------------------------------------------------------------------------------
// Load

export const LOAD_HUB = 'load';

/** What a load connection keeps, only in its connection state. */
export interface LoadState {
  owner: string;
  n: number;
  sum: number;
  seen: number[];
  hash: string;
}

/** The state after one more value: the test computes the same on its side. */
export function nextLoadState(state: LoadState, value: number): LoadState {
  return {
    owner: state.owner,
    n: state.n + 1,
    sum: state.sum + value,
    seen: [...state.seen, value],
    hash: createHash('sha256').update(`${state.hash}:${value}`).digest('hex').slice(0, 16),
  };
}

export const initialLoadState = (owner: string): LoadState => ({
  owner,
  n: 0,
  sum: 0,
  seen: [],
  hash: '',
});

export class AddDto {
  @IsInt()
  value!: number;
}

/** Observations for the test only (handlers never read them): the final states and any mismatch. */
export const loadLog = {
  finalStates: new Map<string, unknown>(),
  connected: new Map<string, unknown>(),
  mismatches: [] as string[],
};

@WebPubSubHub(LOAD_HUB)
export class LoadHub {
  @OnConnect()
  connect(@EventContext() context: WebPubSubContext) {
    for (const [key, value] of Object.entries(initialLoadState(context.connectionId))) {
      context.setState(key, value);
    }
    return { userId: `user-${context.connectionId}` };
  }

  @OnConnected()
  connected(@EventContext() context: WebPubSubContext) {
    this.checkOwner(context);
    loadLog.connected.set(context.connectionId, context.states);
  }

  @OnUserEvent('add')
  add(@EventData() data: AddDto, @EventContext() context: WebPubSubContext) {
    const state = this.checkOwner(context);
    const next = nextLoadState(state, data.value);
    for (const [key, value] of Object.entries(next)) context.setState(key, value);
    return { n: next.n, sum: next.sum, hash: next.hash };
  }

  /** Reads the state without changing it: the service keeps the previous one. */
  @OnUserEvent('peek')
  peek(@EventContext() context: WebPubSubContext) {
    const state = this.checkOwner(context);
    return { n: state.n, sum: state.sum, hash: state.hash };
  }

  @OnDisconnected()
  disconnected(@EventContext() context: WebPubSubContext) {
    this.checkOwner(context);
    loadLog.finalStates.set(context.connectionId, context.states);
  }

  private checkOwner(context: WebPubSubContext): LoadState {
    const state = context.states as unknown as LoadState;
    if (state.owner !== context.connectionId) {
      loadLog.mismatches.push(
        `${context.eventName} of ${context.connectionId} carried the state of ${String(state.owner)}`,
      );
    }
    return state;
  }
}

@Module({
  imports: [WebPubSubModule.forRoot({ connectionString: CONNECTION_STRING })],
  providers: [LoadHub],
})
export class LoadModule {}

/**
 * Load over loopback: CONNECTIONS simulated connections at once, each running its own sequence
 * of EVENTS_PER_CONNECTION events (connect, connected, user events that change or only read the
 * connection state, disconnected) through its own `WebPubSubTestClient`, which carries
 * `ce-connectionState` like the service. The hub keeps everything in the connection state, so
 * each connection's state must evolve exactly as its own events say: any cross-talk between
 * concurrent requests shows as a wrong value, a wrong owner or a wrong final state.
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebPubSubTestClient } from 'nestjs-web-pubsub/testing';
import {
  LOAD_HUB,
  LoadModule,
  initialLoadState,
  loadLog,
  nextLoadState,
  type LoadState,
} from './robustness-fixtures.js';
import { ADAPTERS, CONNECTION_STRING, startApp, type RunningApp } from './upstream-helpers.js';

const CONNECTIONS = 200;
/** connect, connected, USER_EVENTS user events, disconnected. */
const USER_EVENTS = 17;
const EVENTS_PER_CONNECTION = USER_EVENTS + 3;
/** The whole run must end within this, or it counts as a failure. */
const DEADLINE_MS = 60_000;

/** A value per connection and step, different for every connection. */
const valueOf = (connection: number, step: number) =>
  ((connection * 7_919 + step * 104_729) % 2_001) - 1_000;
/** Every fourth user event only reads the state (the answer then carries no state header). */
const isPeek = (step: number) => step % 4 === 3;

/** Runs one connection's sequence; returns the problems found (none expected). */
async function runConnection(url: string, adapter: string, index: number): Promise<string[]> {
  const problems: string[] = [];
  const id = `load-${adapter}-${index}`;
  const client = new WebPubSubTestClient(url, {
    hub: LOAD_HUB,
    connectionString: CONNECTION_STRING,
    connectionId: id,
  });
  const expectThat = (ok: boolean, what: string) => {
    if (!ok) problems.push(`${id}: ${what}`);
  };
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

  let expected: LoadState = initialLoadState(id);
  const connect = await client.connect();
  expectThat(connect.status === 200, `connect answered ${connect.status} ${connect.error ?? ''}`);
  expectThat(same(client.states, expected), `state after connect ${JSON.stringify(client.states)}`);
  expectThat(client.userId === `user-${id}`, `user id ${client.userId}`);

  const connected = await client.connected();
  expectThat(connected.status === 204, `connected answered ${connected.status}`);

  for (let step = 0; step < USER_EVENTS; step++) {
    if (isPeek(step)) {
      const peek = await client.event('peek', null);
      expectThat(peek.status === 200, `peek ${step} answered ${peek.status} ${peek.error ?? ''}`);
      expectThat(
        same(peek.data, { n: expected.n, sum: expected.sum, hash: expected.hash }),
        `peek ${step} saw ${JSON.stringify(peek.data)}`,
      );
      expectThat(peek.newStates === undefined, `peek ${step} changed the state`);
    } else {
      const value = valueOf(index, step);
      expected = nextLoadState(expected, value);
      const add = await client.event('add', { value });
      expectThat(add.status === 200, `add ${step} answered ${add.status} ${add.error ?? ''}`);
      expectThat(
        same(add.data, { n: expected.n, sum: expected.sum, hash: expected.hash }),
        `add ${step} answered ${JSON.stringify(add.data)}`,
      );
    }
    expectThat(same(client.states, expected), `state after step ${step}`);
  }

  const disconnected = await client.disconnected('bye');
  expectThat(disconnected.status === 204, `disconnected answered ${disconnected.status}`);
  expectThat(
    same(loadLog.connected.get(id), initialLoadState(id)),
    `connected saw ${JSON.stringify(loadLog.connected.get(id))}`,
  );
  expectThat(
    same(loadLog.finalStates.get(id), expected),
    `disconnected saw ${JSON.stringify(loadLog.finalStates.get(id))}`,
  );
  return problems;
}

describe.each(ADAPTERS)('load over %s', (adapter) => {
  let running: RunningApp;
  beforeAll(async () => {
    running = await startApp(LoadModule, { adapter });
  });
  afterAll(() => running.close());

  it(`keeps ${CONNECTIONS} concurrent connections' states apart`, async () => {
    loadLog.mismatches.length = 0;
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`the load run took more than ${DEADLINE_MS} ms`)),
        DEADLINE_MS,
      );
    });
    const runs = Array.from({ length: CONNECTIONS }, (_, index) =>
      runConnection(running.url, adapter, index).catch((err: Error) => [
        `load-${adapter}-${index}: ${err.message}`,
      ]),
    );
    let problems: string[];
    try {
      problems = (await Promise.race([Promise.all(runs), deadline])).flat();
    } finally {
      clearTimeout(timer);
    }
    const ms = performance.now() - started;
    const requests = CONNECTIONS * EVENTS_PER_CONNECTION;
    console.info(
      `[load ${adapter}] ${CONNECTIONS} connections × ${EVENTS_PER_CONNECTION} events = ${requests} requests ` +
        `in ${(ms / 1000).toFixed(2)} s (${Math.round(requests / (ms / 1000))} req/s)`,
    );

    expect(problems.length, problems.slice(0, 5).join('\n')).toBe(0);
    expect(loadLog.mismatches.length, loadLog.mismatches.slice(0, 5).join('\n')).toBe(0);
    const ids = Array.from({ length: CONNECTIONS }, (_, index) => `load-${adapter}-${index}`);
    expect(ids.filter((id) => !loadLog.finalStates.has(id))).toEqual([]);
  }, 120_000);
});
